"""The shard store: write -> read round trip, reruns, failures, crash safety, and reading with other tools."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from feature_schemas import Manifest, Store, StoreError, coverage_column, validate
from pipelines.build import build_store
from pipelines.collapse import CollapseConfig
from pipelines.records import WordFeatures, Words
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn

REPO = Path(__file__).resolve().parents[1]


def build(path: Path, n: int = 6, **kw) -> object:
    return build_store(path, "synthetic", syn.make_units(n, bad=kw.pop("bad", None)), syn.process, syn.FEATURE_SETS,
                       kw.pop("config", BuildConfig(units_per_shard=2)), progress=False, **kw)


def file_hashes(root: Path) -> dict[str, str]:
    m = Manifest.load(root)
    return {rel: e.sha256 for rel, e in m.files.items()} | {"manifest.json": (root / "manifest.json").read_text()}


def test_round_trip_matches_records(tmp_path: Path) -> None:
    res = build(tmp_path / "s", bad={4})
    store = Store(tmp_path / "s", verify=True)
    assert validate(store.path).ok, str(validate(store.path))
    segs = store.segments()
    assert segs.num_rows == 5 * 3 and res.n_failures == 1
    fail = store.failures().to_pylist()
    assert fail[0]["item_id"] == "vid004" and fail[0]["stage"] == "decode" and "truncated" in fail[0]["reason"]
    # every record comes back with its values: text vectors exactly, frame sets collapsed and masked
    expected = {r.segment_id: r for u in syn.make_units(6) if u.unit_id != "vid004" for r in syn.process(u).records}
    for sid, rec in expected.items():
        got = store.segment(sid)
        assert got["words"] == rec.words.words
        np.testing.assert_allclose(got["word_start"], rec.words.start)
        np.testing.assert_allclose(got["text_vec"], rec.word_features["text_vec"].values, rtol=0, atol=0)
        assert got["audio_lld"].shape == (len(rec.words.words), 5) and np.isfinite(got["audio_lld"]).all()
        assert abs(got["sentiment"] - rec.segment["sentiment"]) < 1e-6
    assert store.manifest.report["counters"]["videos_read"] == 5
    assert store.manifest.report["counters"]["nonfinite_frames.audio_lld"] > 0


def test_split_reads_and_streaming(tmp_path: Path) -> None:
    build(tmp_path / "s", n=9)
    store = Store(tmp_path / "s")
    total = 0
    for split in store.splits():
        t = store.aligned(split, feature_sets=["face_geo"])
        assert set(t.column("split").to_pylist()) == {split}
        assert "audio_lld" not in t.column_names and coverage_column("face_geo") in t.column_names
        total += t.num_rows
    assert total == store.segments().num_rows
    batches = list(store.iter_batches("aligned", "train", feature_sets=["audio_lld"], batch_size=2))
    assert batches and max(b.num_rows for b in batches) <= 2
    with pytest.raises(StoreError, match="no word-aligned feature set 'nope'"):
        store.aligned("train", feature_sets=["nope"])


def test_rerun_skips_written_shards_and_redoes_changed_config(tmp_path: Path) -> None:
    first = build(tmp_path / "s")
    before = file_hashes(tmp_path / "s")
    again = build(tmp_path / "s")
    assert again.shards_written == 0 and again.shards_skipped == first.shards_written
    assert file_hashes(tmp_path / "s") == before
    changed = build(tmp_path / "s", config=BuildConfig(units_per_shard=2, collapse=CollapseConfig(mode="mean")))
    assert changed.shards_written == first.shards_written
    # a corrupted shard is detected by its checksum and rewritten
    victim = next((tmp_path / "s").glob("aligned/*/part-*.parquet"))
    victim.write_bytes(b"garbage")
    assert Store(tmp_path / "s").verify()
    fixed = build(tmp_path / "s", config=BuildConfig(units_per_shard=2, collapse=CollapseConfig(mode="mean")))
    assert fixed.shards_written == 1 and not Store(tmp_path / "s").verify()


def test_a_build_whose_shards_all_failed_reports_none_written(tmp_path: Path) -> None:
    from pipelines.store_writer import open_build

    build = open_build(tmp_path / "s", "nothing-written", syn.make_units(4), syn.FEATURE_SETS, BuildConfig(units_per_shard=2))
    result = build.finish([])  # every worker died past its retries
    assert (result.shards_written, result.shards_skipped) == (0, 0)
    assert result.manifest.report["incomplete_shards"] == [s.shard_id for s in build.shards] and len(build.shards) == 2


def test_invalid_labels_become_failure_rows(tmp_path: Path) -> None:
    res = build_store(tmp_path / "s", "bad-labels", syn.make_units(2), _process_with_bad_label, syn.FEATURE_SETS, progress=False)
    reasons = {f["item_id"]: f["reason"] for f in Store(res.store).failures().to_pylist()}
    assert "vid000[0]" in reasons and "outside [-3.0, 3.0]" in reasons["vid000[0]"]
    assert Store(res.store).segments().num_rows == 5 and validate(res.store).ok


def test_bad_coverage_fails_its_segment_and_nan_labels_become_null(tmp_path: Path) -> None:
    """Contract problems are per segment: a coverage outside [0, 1] fails that segment only (the shard and the
    build go on), and a NaN label of any float type is stored as a missing label."""
    res = build_store(tmp_path / "s", "bad-rows", syn.make_units(2), _process_with_bad_rows, syn.FEATURE_SETS,
                      progress=False)
    store = Store(res.store)
    reasons = {f["item_id"]: f["reason"] for f in store.failures().to_pylist()}
    assert list(reasons) == [BAD_COVERAGE] and "coverage outside [0, 1]" in reasons[BAD_COVERAGE]
    segments = store.segments().to_pandas().set_index("segment_id")
    assert len(segments) == 5 and validate(res.store).ok
    assert np.isnan(segments.loc[NAN_LABEL, "happy"]) and store.segments().column("happy").null_count == 1


BAD_COVERAGE, NAN_LABEL = "vid001[0]", "vid001[1]"


def _process_with_bad_rows(unit):  # top-level: must pickle
    result = syn.process(unit)
    for rec in result.records:
        if rec.segment_id == BAD_COVERAGE:
            rec.words = Words(["a", "b"], np.array([0.5, 1.0]), np.array([0.9, 1.5]), np.ones(2), "given")
            rec.word_features["text_vec"] = WordFeatures(np.ones((2, 4)), np.array([0.5, 1.5]))
        if rec.segment_id == NAN_LABEL:
            rec.segment["happy"] = np.float32("nan")
    return result


def _process_with_bad_label(unit):  # top-level: must pickle
    result = syn.process(unit)
    if unit.unit_id == "vid000":
        result.records[0].segment["sentiment"] = 7.5
    return result


def test_dask_local_cluster_build_equals_inline(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    inline = build(tmp_path / "inline", n=8)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        dask = build(tmp_path / "dask", n=8, executor=client)
    assert dask.shards_written == inline.shards_written
    assert file_hashes(tmp_path / "dask") == file_hashes(tmp_path / "inline")


def test_second_build_on_same_store_refuses(tmp_path: Path) -> None:
    from pipelines.store_dirs import StoreLock

    (tmp_path / "s").mkdir()
    with StoreLock(tmp_path / "s"), pytest.raises(StoreError, match="another build is writing this store"):
        build(tmp_path / "s")


KILL_SCRIPT = """
import sys
from pipelines.build import build_store
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn
build_store(sys.argv[1], "synthetic", syn.make_units(12, sleep=0.05), syn.process, syn.FEATURE_SETS,
            BuildConfig(units_per_shard=1, keep_frames=True), progress=False)
"""


def test_sigkill_then_rerun_equals_clean_build(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(clean)], cwd=REPO, check=True)
    expected = file_hashes(clean)
    rng = random.Random(7)
    for trial in range(5):
        store = tmp_path / f"killed{trial}"
        after = rng.randint(1, 10)  # kill once this many of the 12 shards are committed: a different point each trial
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(store)], cwd=REPO)
        deadline = time.monotonic() + 60
        while len(list(store.glob("_build/shards/part-*.json"))) < after and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.04))  # and land somewhere inside the next shard's writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        committed = len(list(store.glob("_build/shards/part-*.json")))
        assert after <= committed < 12, f"trial {trial}: kill did not land mid-build ({committed} shards)"
        for path in store.rglob("*.parquet"):  # never a partial file under a visible name
            pq.read_metadata(path)
        subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(store)], cwd=REPO, check=True)
        assert file_hashes(store) == expected, f"trial {trial}"
        assert not list(store.rglob(".*.tmp-*")) and not (store / "_build").exists()


def test_readable_by_pandas_duckdb_and_hf_datasets(tmp_path: Path) -> None:
    build(tmp_path / "s", n=6)
    root = tmp_path / "s"
    import duckdb
    import pandas as pd

    segs = pd.read_parquet(root / "segments" / "train")
    assert len(segs) == Store(root).segments("train").num_rows
    n = duckdb.sql(f"select count(*) from read_parquet('{root}/aligned/*/*.parquet')").fetchall()[0][0]
    assert n == Store(root).segments().num_rows
    from datasets import load_dataset

    os.environ["HF_DATASETS_OFFLINE"] = "1"
    by_split = load_dataset(str(root), "aligned", cache_dir=str(tmp_path / "hf"))
    assert set(by_split) == set(Store(root).splits())
    row = next(r for r in by_split["train"] if r["words"])
    assert len(row["audio_lld"]) == len(row["words"]) and len(row["audio_lld"][0]) == 5
    plain = load_dataset("parquet", data_files={"test": str(root / "segments/test/*.parquet")}, cache_dir=str(tmp_path / "hf2"))
    assert plain["test"].num_rows == Store(root).segments("test").num_rows
