"""Recipes return what to build, nothing callable: a stage name the driver resolves, the stage's typed options and
typed units; the driver refuses an unknown stage before it touches the store."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feature_schemas import SPLITS, validate
from pipelines.build import STAGES, Stage, run_build
from pipelines.errors import PipelineError
from pipelines.export.mmsa import export_mmsa
from pipelines.recipes.mmsa import MMSA_UNITS_PER_SHARD, plan_mmsa
from pipelines.recipes.mosi_utterance import plan_mosi_utterance
from pipelines.recipes.sdk import build_sdk, plan_sdk
from pipelines.recipes.videos import plan_videos
from pipelines.stages.csd import CsdOptions, CsdVideos
from pipelines.stages.media import VideoConfig
from pipelines.stages.mmsa import MmsaOptions, MmsaRows
from pipelines.stages.utterance import UtteranceOptions, UtteranceRows

from .csd_fixtures import write_mosei_fixture
from .test_utterance import LABELS, RELEASE


def _callables(value: Any, depth: int = 0) -> list[str]:
    """Callables anywhere inside a plan's data (dataclass fields, containers); a class or a numpy array is data."""
    if depth > 6 or isinstance(value, (str, bytes, int, float, bool, type(None), np.ndarray, np.generic, Path)):
        return []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [f for f in dataclasses.fields(value) for f in _callables(getattr(value, f.name), depth + 1)]
    if isinstance(value, dict):
        return [c for k, v in value.items() for c in _callables(k, depth + 1) + _callables(v, depth + 1)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [c for v in value for c in _callables(v, depth + 1)]
    return [repr(value)] if isinstance(value, Callable) else []  # type: ignore[arg-type]


def _check_plan(plan: Any, stage: str, options: type, payload: type) -> None:
    assert plan.stage == stage and stage in STAGES
    assert isinstance(plan.options, options)
    assert plan.units and all(isinstance(u.payload, payload) for u in plan.units)
    assert _callables(plan.options) == [] and _callables([u.payload for u in plan.units]) == []
    again = pickle.loads(pickle.dumps(plan))  # what a flow or a worker receives
    assert again.stage == plan.stage and [u.key for u in again.units] == [u.key for u in plan.units]


def test_csd_plan_is_data_and_builds(tmp_path: Path) -> None:
    write_mosei_fixture(tmp_path / "csd")
    plan = plan_sdk(tmp_path / "csd", "mosei")
    _check_plan(plan, "csd", CsdOptions, CsdVideos)
    assert plan.options.sets == tuple(fs.name for fs in plan.feature_sets)
    result = run_build(plan, tmp_path / "store", show_bar=False)
    assert result.n_segments > 0 and validate(tmp_path / "store").ok


def test_mmsa_plan_is_data(tmp_path: Path) -> None:
    write_mosei_fixture(tmp_path / "csd")
    build_sdk(tmp_path / "csd", tmp_path / "store", "mosei", progress=False)
    plan = plan_mmsa(export_mmsa(tmp_path / "store", tmp_path / "aligned_50.pkl"))
    _check_plan(plan, "mmsa", MmsaOptions, MmsaRows)
    assert {u.payload.split for u in plan.units} <= set(SPLITS)
    assert plan.config.units_per_shard == MMSA_UNITS_PER_SHARD  # as the CLI and the flow build it


@pytest.mark.skipif(not RELEASE.is_dir(), reason="the bc-LSTM release is not in the shared data")
def test_utterance_plan_is_data() -> None:
    plan = plan_mosi_utterance(RELEASE, LABELS)
    _check_plan(plan, "utterance", UtteranceOptions, UtteranceRows)
    rows = [r for u in plan.units for r in u.payload.rows]
    assert len(rows) == len({sid for sid, _ in rows}) and {split for _, split in rows} == {"train", "valid", "test"}


def test_video_plan_names_the_media_stage_with_its_config(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("segment_id,transcript,sentiment,split\na,good film,1.5,train\nb,bad film,-2,test\n")
    config = VideoConfig(face=None)
    plan = plan_videos(manifest, config)
    assert plan.stage == "media" and plan.options == config
    assert _callables(plan.options) == []


def test_an_unknown_stage_is_refused_before_the_store_is_touched(tmp_path: Path) -> None:
    write_mosei_fixture(tmp_path / "csd")
    plan = dataclasses.replace(plan_sdk(tmp_path / "csd", "mosei"), stage="sdk")
    with pytest.raises(PipelineError, match=r"unknown stage 'sdk' \(known: media, csd, mmsa, utterance"):
        run_build(plan, tmp_path / "store", show_bar=False)
    assert not (tmp_path / "store").exists()


def test_a_bound_stage_travels_without_its_function(tmp_path: Path) -> None:
    """A worker gets the stage's name and options and looks the function up itself, once."""
    write_mosei_fixture(tmp_path / "csd")
    plan = plan_sdk(tmp_path / "csd", "mosei")
    stage = Stage(plan.stage, plan.options)
    first = stage(plan.units[0])
    shipped = pickle.loads(pickle.dumps(stage))
    assert shipped._function is None and shipped.options == plan.options
    again = shipped(plan.units[0])
    assert [r.segment_id for r in again.records] == [r.segment_id for r in first.records] and first.records
