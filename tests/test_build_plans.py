"""Recipes return what to build: a stage as a top-level function reference (pickled by name), the stage's typed
options and typed units, nothing else callable; the driver refuses a stage a worker could not import before it
touches the store, and a worker that runs a .csd stage imports no media stack."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.csd_fixtures import write_mosei_fixture
from feature_schemas import SPLITS, validate
from pipelines.build import Stage, run_build
from pipelines.errors import PipelineError
from pipelines.export.mmsa import export_mmsa
from pipelines.recipes.mmsa import MMSA_UNITS_PER_SHARD, plan_mmsa
from pipelines.recipes.mosi_utterance import plan_mosi_utterance
from pipelines.recipes.sdk import build_sdk, plan_sdk
from pipelines.recipes.videos import plan_videos
from pipelines.stages.csd import CsdOptions, CsdVideos, process_csd_unit
from pipelines.stages.media import VideoConfig, process_video_unit
from pipelines.stages.mmsa import MmsaOptions, MmsaRows, process_mmsa_unit
from pipelines.stages.utterance import UtteranceOptions, UtteranceRows, process_utterance_unit

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


ROOT = Path(__file__).resolve().parents[1]


def _check_plan(plan: Any, stage: Callable[..., Any], options: type, payload: type) -> None:
    assert plan.stage is stage
    assert isinstance(plan.options, options)
    assert plan.units and all(isinstance(u.payload, payload) for u in plan.units)
    assert _callables(plan.options) == [] and _callables([u.payload for u in plan.units]) == []
    again = pickle.loads(pickle.dumps(plan))  # what a flow or a worker receives
    assert again.stage is plan.stage and [u.key for u in again.units] == [u.key for u in plan.units]


def test_csd_plan_is_data_and_builds(tmp_path: Path) -> None:
    write_mosei_fixture(tmp_path / "csd")
    plan = plan_sdk(tmp_path / "csd", "mosei")
    _check_plan(plan, process_csd_unit, CsdOptions, CsdVideos)
    assert plan.options.sets == tuple(fs.name for fs in plan.feature_sets)
    result = run_build(plan, tmp_path / "store", show_bar=False)
    assert result.n_segments > 0 and validate(tmp_path / "store").ok


def test_mmsa_plan_is_data(tmp_path: Path) -> None:
    write_mosei_fixture(tmp_path / "csd")
    build_sdk(tmp_path / "csd", tmp_path / "store", "mosei", progress=False)
    plan = plan_mmsa(export_mmsa(tmp_path / "store", tmp_path / "aligned_50.pkl"))
    _check_plan(plan, process_mmsa_unit, MmsaOptions, MmsaRows)
    assert {u.payload.split for u in plan.units} <= set(SPLITS)
    assert plan.config.units_per_shard == MMSA_UNITS_PER_SHARD  # as the CLI and the flow build it


@pytest.mark.skipif(not RELEASE.is_dir(), reason="the bc-LSTM release is not in the shared data")
def test_utterance_plan_is_data() -> None:
    plan = plan_mosi_utterance(RELEASE, LABELS)
    _check_plan(plan, process_utterance_unit, UtteranceOptions, UtteranceRows)
    rows = [r for u in plan.units for r in u.payload.rows]
    assert len(rows) == len({sid for sid, _ in rows}) and {split for _, split in rows} == {"train", "valid", "test"}


def test_video_plan_names_the_media_stage_with_its_config(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("segment_id,transcript,sentiment,split\na,good film,1.5,train\nb,bad film,-2,test\n")
    config = VideoConfig(face=None)
    plan = plan_videos(manifest, config)
    assert plan.stage is process_video_unit and plan.options == config
    assert _callables(plan.options) == []


def _local_stage(unit: Any, options: Any) -> Any:
    return options


def test_a_stage_a_worker_cannot_import_is_refused_before_the_store_is_touched(tmp_path: Path) -> None:
    write_mosei_fixture(tmp_path / "csd")
    plan = plan_sdk(tmp_path / "csd", "mosei")

    def nested(unit: Any, options: Any) -> Any:
        return None

    for bad in (nested, lambda unit, options: None, "csd"):
        with pytest.raises(PipelineError, match="not a top-level function"):
            run_build(dataclasses.replace(plan, stage=bad), tmp_path / "store", show_bar=False)
    assert not (tmp_path / "store").exists()
    assert Stage(_local_stage, 3).name == "tests.test_build_plans._local_stage"


_WORKER = """
import pickle, sys, json
stage, unit = pickle.load(open(sys.argv[1], "rb"))
result = stage(unit)
print(json.dumps({"records": len(result.records), "loaded": sorted(m for m in ("pipelines.stages.media",
      "pipelines.extract.text", "torch", "transformers", "av", "opensmile") if m in sys.modules)}))
"""


def test_a_csd_stage_travels_by_name_and_its_worker_imports_no_media_stack(tmp_path: Path) -> None:
    """What a worker receives: the stage function by reference and its options. A fresh interpreter that runs it
    (as a spawned worker would) imports the .csd stage only: no media stage, no torch, no decoders."""
    write_mosei_fixture(tmp_path / "csd")
    plan = plan_sdk(tmp_path / "csd", "mosei")
    stage = Stage(plan.stage, plan.options)
    first = stage(plan.units[0])
    shipped = pickle.loads(pickle.dumps(stage))
    assert shipped.function is process_csd_unit and shipped.options == plan.options
    again = shipped(plan.units[0])
    assert [r.segment_id for r in again.records] == [r.segment_id for r in first.records] and first.records
    (tmp_path / "job.pkl").write_bytes(pickle.dumps((stage, plan.units[0])))
    r = subprocess.run([sys.executable, "-c", _WORKER, str(tmp_path / "job.pkl")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"records": len(first.records), "loaded": []}
