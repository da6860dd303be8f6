"""Builds give the same bytes whatever the worker count, order or restarts; a worker that keeps dying costs only
its shard; Ctrl-C stops a build within seconds and leaves it resumable; a build ends without Dask killing its
workers. Real clips through the real CLI, and the synthetic recipe for worker deaths."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from feature_schemas import Store, validate
from pipelines import build as build_module
from pipelines.build import build_store
from pipelines.dask_cluster import WORKER_RETRIES, dask_client
from pipelines.store_writer import BuildConfig
from tests import media_fixtures as mf
from tests import synthetic_recipe as syn
from tests.store_fixtures import ctrl_c_reaches_it

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STILL_ALIVE = "still alive after"


def parquet_hashes(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.rglob("*.parquet"))}


# -- worker deaths (synthetic units, a real local Dask cluster) ------------------------------------------
@pytest.mark.slow
def test_a_dying_worker_is_retried_then_recorded_and_the_next_run_retries_it(tmp_path: Path) -> None:
    cure = tmp_path / "cure"  # vid001 kills its worker process until this file exists
    units = syn.make_units(6, sleep=0.3, die={1: str(cure)})  # the others are in flight when it dies
    config = BuildConfig(units_per_shard=1)
    store = tmp_path / "store"
    with dask_client(n_workers=2) as client:
        result = build_store(store, "syn", units, syn.process, syn.FEATURE_SETS, config, executor=client, progress=False)
    attempts = (tmp_path / "cure.attempts").read_text().split()
    assert len(attempts) == WORKER_RETRIES + 1 == len(set(attempts))  # bounded, each time in a fresh process
    failures = Store(store).failures().to_pylist()
    assert [(f["item_id"], f["stage"]) for f in failures] == [("vid001", "worker")]
    assert f"worker died {WORKER_RETRIES + 1} times processing this shard" in failures[0]["reason"]
    assert "out of memory or a crash in a native library" in failures[0]["reason"]
    assert result.n_segments == 15 and result.n_failures == 1  # the other five videos are in the store
    assert validate(store).ok

    cure.write_text("")  # whatever killed it is fixed: the same build, rerun, tries that shard again
    again = build_store(store, "syn", units, syn.process, syn.FEATURE_SETS, config, progress=False)
    assert (again.shards_written, again.shards_skipped, again.n_failures) == (1, 5, 0)
    clean = build_store(tmp_path / "clean", "syn", units, syn.process, syn.FEATURE_SETS, config, progress=False)
    assert clean.n_failures == 0 and parquet_hashes(store) == parquet_hashes(tmp_path / "clean")


def test_waiting_names_the_unfinished_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(build_module, "WAIT_LOG_S", 0.05)
    units = syn.make_units(2, sleep=0.5)
    with caplog.at_level(logging.INFO, logger="pipelines.build"), cf.ThreadPoolExecutor(2) as pool:
        build_store(tmp_path / "s", "syn", units, syn.process, syn.FEATURE_SETS, BuildConfig(units_per_shard=1),
                    executor=pool, progress=False)
    lines = [r.getMessage() for r in caplog.records if "running" in r.getMessage()]
    assert lines and "2 shards running (00000, 00001), 0 queued" in lines[0]


# -- real clips through the CLI ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four media files (two byte-identical copies of each real clip), one listing a clip twice: 4 shards."""
    mf.need(mf.MOSI_CLIP, mf.MOSI_LABELS, mf.FACE_CLIP)
    d = tmp_path_factory.mktemp("repro_inputs")
    for name, src in (("mosi_a", mf.MOSI_CLIP), ("mosi_b", mf.MOSI_CLIP), ("face_a", mf.FACE_CLIP), ("face_b", mf.FACE_CLIP)):
        shutil.copyfile(src, d / f"{name}.mp4")
    text = mf.mosi_transcript()
    rows = [
        {"video_path": "mosi_a.mp4", "segment_id": "m1", "transcript": text, "sentiment": -0.8, "split": "train"},
        {"video_path": "mosi_a.mp4", "segment_id": "m2", "transcript": text, "sentiment": -0.8, "split": "train"},
        {"video_path": "mosi_b.mp4", "segment_id": "m3", "transcript": text, "sentiment": -0.8, "split": "train"},
        {"video_path": "face_a.mp4", "segment_id": "f1", "transcript": "hello there", "split": "test"},
        {"video_path": "face_b.mp4", "segment_id": "f2", "transcript": "hello there", "split": "test"},
    ]
    path = d / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def build_cmd(manifest: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "build", "videos", "--input", str(manifest), "--out", str(out),
            "--workers", str(workers), "--units-per-shard", "1"]


def run_build(manifest: Path, out: Path, workers: int) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(build_cmd(manifest, out, workers), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert STILL_ALIVE not in done.stderr  # the local cluster closed without killing a worker
    return done


def start_build_and_wait_for_a_shard(manifest: Path, out: Path, workers: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(build_cmd(manifest, out, workers), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=ctrl_c_reaches_it)
    deadline = time.monotonic() + 600
    while not list(out.glob("_build/shards/part-*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before the signal"
    return proc


@pytest.fixture(scope="module")
def reference(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("repro_ref") / "store"
    run_build(manifest, store, workers=0)
    return store


@pytest.mark.slow
def test_same_clip_under_two_ids_or_paths_gives_identical_features(reference: Path) -> None:
    store = Store(reference)
    rows = {r["segment_id"]: r for s in store.splits() for r in store.aligned(s).to_pylist()}
    assert set(rows) == {"m1", "m2", "m3", "f1", "f2"} and rows["m1"]["align_method"] == "forced"
    for a, b in (("m1", "m2"), ("m1", "m3"), ("f1", "f2")):
        for col, value in rows[a].items():
            if col != "segment_id":
                assert np.array_equal(np.asarray(value, dtype=object), np.asarray(rows[b][col], dtype=object)), (a, b, col)


@pytest.mark.slow
def test_sigint_stops_the_build_at_once_and_the_rerun_on_two_workers_gives_the_same_bytes(
        manifest: Path, reference: Path, tmp_path: Path) -> None:
    store = tmp_path / "interrupted"
    proc = start_build_and_wait_for_a_shard(manifest, store, workers=2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)  # measured: ~3.5 s on a loaded 2-core machine
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted; rerun the same command" in err and "Traceback" not in err
    assert (store / "_build" / "shards").is_dir() and not (store / "manifest.json").exists()
    rerun = run_build(manifest, store, workers=2)
    assert "already written" in rerun.stdout
    assert parquet_hashes(store) == parquet_hashes(reference)


@pytest.mark.slow
def test_sigkill_mid_build_then_rerun_gives_the_same_bytes(manifest: Path, reference: Path, tmp_path: Path) -> None:
    store = tmp_path / "killed"
    proc = start_build_and_wait_for_a_shard(manifest, store, workers=2)
    os.killpg(proc.pid, signal.SIGKILL)  # the build, its Dask workers and all (a machine going down)
    proc.communicate(timeout=60)
    assert not (store / "manifest.json").exists()
    run_build(manifest, store, workers=0)
    assert parquet_hashes(store) == parquet_hashes(reference)


# -- the executor helper ------------------------------------------------------------------------------------
def _record_and_return(item: int, seen: list[int]) -> int:
    seen.append(item)
    if item == 1:
        raise ValueError("item 1 is bad")
    time.sleep(0.05)
    return item


def test_map_unordered_turns_errors_into_results_and_closing_cancels_the_rest() -> None:
    from contextlib import closing

    from pipelines.executors import map_unordered

    seen: list[int] = []
    got = list(map_unordered(_record_and_return, range(4), None, seen, on_error=lambda item, e: f"{item}: {e}"))
    assert got == [0, "1: item 1 is bad", 2, 3]
    with pytest.raises(ValueError, match="item 1 is bad"):
        list(map_unordered(_record_and_return, range(4), None, []))  # without on_error the error propagates

    seen = []
    with cf.ThreadPoolExecutor(1) as pool:
        with closing(map_unordered(_record_and_return, range(2, 22), pool, seen)) as results:
            assert next(results) in range(2, 22)  # then stop, as Ctrl-C would
    assert len(seen) < 20  # what had not started was cancelled, not run


def _square(item: int) -> int:
    return item * item


def test_dask_map_asks_the_scheduler_for_its_threads_once_not_per_task() -> None:
    """Each `client.nthreads()` is a round trip to the scheduler: asked once for a run with steady workers (and
    again only on a wait timeout, a failed task or while no worker is known)."""
    from distributed import Client, LocalCluster

    from pipelines.executors import map_unordered

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        calls: list[int] = []
        real = client.nthreads

        def counted(*args: object, **kwargs: object) -> dict:
            calls.append(1)
            return real(*args, **kwargs)

        client.nthreads = counted  # the real call, counted
        got = sorted(map_unordered(_square, range(30), client))
    assert got == [i * i for i in range(30)]
    assert len(calls) == 1
