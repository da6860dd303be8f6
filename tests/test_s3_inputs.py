"""Inputs at a URL (issue 17, input side), against a real S3 API on 127.0.0.1 (moto's server, tests/s3_fixtures.py).

A MOSEI-shaped .csd release (bench/csd_fixtures.py, written by the SDK's own writer) is uploaded and built from
`--csd-dir s3://...` into a local store: the same Parquet bytes as a build from the local copy, except the
segments' `source_path`, which names where each segment was read from. h5py reads the objects by byte ranges,
never whole. A manifest at a URL, with its clip beside it (relative path) or named by URL, builds the same rows
as the local manifest. A missing object, bucket or prefix is one clear error (or one failure row), naming the
URL, never a botocore traceback.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.csd_fixtures import write_mosei_fixture
from feature_schemas.storage import list_inputs, resolve_input
from pipelines.build import run_build
from pipelines.errors import PipelineError
from pipelines.recipes.sdk import plan_sdk, sdk_units
from pipelines.store_writer import BuildConfig

from . import media_fixtures as mf
from .s3_fixtures import ENV, S3, s3  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[1]
SECRET = ENV["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(autouse=True, scope="module")
def quiet_server() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request


def named(root: Path) -> dict[str, Path]:
    """Parquet files by name without their content digest (`part-00000-<sha>.parquet` -> `part-00000.parquet`):
    files of other contents (a segments table's `source_path`) carry other names, but stand in the same place."""
    return {re.sub(r"-[0-9a-f]{12}\.parquet$", ".parquet", p.relative_to(root).as_posix()): p
            for p in sorted(root.rglob("*.parquet"))}


def parquet_hashes(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256(p.read_bytes()).hexdigest() for rel, p in named(root).items()}


@pytest.fixture(scope="module")
def csd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("csd")
    write_mosei_fixture(folder)
    return folder


@pytest.fixture(scope="module")
def csd_url(s3: S3, csd_dir: Path) -> str:  # noqa: F811
    url = s3.url("releases", "CMU_MOSEI")
    fs = s3.filesystem()
    for p in sorted(csd_dir.glob("*.csd")):
        fs.put_file(str(p), f"{url}/{p.name}")
    return url


def sdk_plan(where: str | Path):  # noqa: ANN201
    return plan_sdk(where, "mosei", config=BuildConfig(units_per_shard=1), batch_videos=1)


def test_csd_release_at_a_url_builds_the_local_store(csd_url: str, csd_dir: Path, tmp_path: Path) -> None:
    local = run_build(sdk_plan(csd_dir), tmp_path / "local", show_bar=False)
    remote = run_build(sdk_plan(csd_url), tmp_path / "remote", show_bar=False)
    assert remote.shards_written == local.shards_written >= 3 and remote.n_segments == local.n_segments > 0
    want, got = parquet_hashes(tmp_path / "local"), parquet_hashes(tmp_path / "remote")
    assert set(got) == set(want)
    assert {k: v for k, v in got.items() if not k.startswith("segments/")} == \
        {k: v for k, v in want.items() if not k.startswith("segments/")}  # every feature and word, byte for byte
    for rel in (k for k in want if k.startswith("segments/")):
        a, b = pq.read_table(named(tmp_path / "local")[rel]), pq.read_table(named(tmp_path / "remote")[rel])
        assert a.drop_columns(["source_path"]).equals(b.drop_columns(["source_path"]))
        assert set(b.column("source_path").to_pylist()) == {f"{csd_url}/CMU_MOSEI_Labels.csd"}
    manifest = json.loads((tmp_path / "remote/manifest.json").read_text())
    assert manifest["build"]["csd_dir"] == csd_url
    assert SECRET not in (tmp_path / "remote/manifest.json").read_text()

    again = run_build(sdk_plan(csd_url), tmp_path / "remote", show_bar=False)  # keys from the listing: resumes
    assert (again.shards_written, again.shards_skipped) == (0, local.shards_written)


@pytest.mark.slow
def test_cli_builds_from_a_csd_url_on_workers(s3: S3, csd_url: str, csd_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """`mmolre build mosei --csd-dir s3://...` on a local Dask cluster: the workers open the objects themselves
    (the endpoint and credentials from their environment); an unreachable endpoint is one line, exit 1."""
    env = {**os.environ, **s3.env(), "PYTHONPATH": str(REPO)}
    run_build(sdk_plan(csd_dir), tmp_path / "local", show_bar=False)
    cmd = [sys.executable, "-m", "flows.cli", "build", "mosei", "--csd-dir", csd_url, "--out", str(tmp_path / "s"),
           "--workers", "1", "--units-per-shard", "1", "--batch-videos", "1", "--quiet", "--json"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    want, got = parquet_hashes(tmp_path / "local"), parquet_hashes(tmp_path / "s")
    assert {k: v for k, v in got.items() if k.startswith("aligned/")} == \
        {k: v for k, v in want.items() if k.startswith("aligned/")}
    assert SECRET not in done.stdout + done.stderr

    bad = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
           "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}
    unreachable = subprocess.run([*cmd[:-2], "--workers", "0", "--quiet"], cwd=REPO, env=bad, capture_output=True,
                                 text=True, timeout=300)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"mmolre: error: {csd_url}: cannot reach the object store")
    assert len(unreachable.stderr.strip().splitlines()) == 1 and SECRET not in unreachable.stderr


def test_real_mosi_labels_at_a_url_build_the_local_store(s3: S3, tmp_path: Path) -> None:  # noqa: F811
    """CMU-MOSI's real Opinion Labels .csd (93 videos, 2,199 segments) from S3 and from disk: the same rows."""
    real = mf.DATA / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
    mf.need(real)
    url = s3.url("real", "CMU_MOSI")
    s3.filesystem().put_file(str(real), f"{url}/{real.name}")
    config = BuildConfig(units_per_shard=64)
    local = run_build(plan_sdk(real.parent, "mosi", config=config, batch_videos=8), tmp_path / "local", show_bar=False)
    remote = run_build(plan_sdk(url, "mosi", config=config, batch_videos=8), tmp_path / "remote", show_bar=False)
    assert remote.n_segments == local.n_segments == 2199
    want, got = parquet_hashes(tmp_path / "local"), parquet_hashes(tmp_path / "remote")
    assert set(got) == set(want)
    assert {k: v for k, v in got.items() if k.startswith("aligned/")} == \
        {k: v for k, v in want.items() if k.startswith("aligned/")}
    for rel in (k for k in want if k.startswith("segments/")):
        a, b = pq.read_table(named(tmp_path / "local")[rel]), pq.read_table(named(tmp_path / "remote")[rel])
        assert a.drop_columns(["source_path"]).equals(b.drop_columns(["source_path"]))


def test_build_mosei_features_flow_takes_a_csd_url(csd_url: str, csd_dir: Path, tmp_path: Path) -> None:
    """The Prefect flow's function with `csd_dir` a URL (run inline, no Prefect server): the local build's features."""
    from flows.build_features import build_mosei_features

    build_mosei_features.fn(csd_dir=csd_url, store=str(tmp_path / "s"), n_workers=0, batch_videos=1, units_per_shard=1)
    run_build(sdk_plan(csd_dir), tmp_path / "local", show_bar=False)
    want, got = parquet_hashes(tmp_path / "local"), parquet_hashes(tmp_path / "s")
    assert {k: v for k, v in got.items() if k.startswith("aligned/")} == \
        {k: v for k, v in want.items() if k.startswith("aligned/")}


def test_unit_keys_come_from_the_listing(s3: S3, csd_url: str, csd_dir: Path) -> None:  # noqa: F811
    units, options, _, _ = sdk_units(csd_url, "mosei", batch_videos=1)
    assert all(v.startswith(csd_url + "/") for v in options.files.values())
    listed = {o.name: o for o in list_inputs(csd_url, ".csd")}
    assert listed["CMU_MOSEI_COVAREP.csd"].size == (csd_dir / "CMU_MOSEI_COVAREP.csd").stat().st_size
    assert all(o.version for o in listed.values())  # the ETag
    local_units, _, _, _ = sdk_units(csd_dir, "mosei", batch_videos=1)
    assert [u.unit_id for u in units] == [u.unit_id for u in local_units]
    assert not {u.key for u in units} & {u.key for u in local_units}

    fs = s3.filesystem()  # a changed object (new ETag) changes the keys of the units that read it
    cov = f"{csd_url}/CMU_MOSEI_COVAREP.csd"
    fs.pipe_file(cov, fs.cat_file(cov) + b"\0")
    try:
        changed, _, _, _ = sdk_units(csd_url, "mosei", batch_videos=1)
        assert all(a.key != b.key for a, b in zip(units, changed, strict=True))
    finally:
        fs.put_file(str(csd_dir / "CMU_MOSEI_COVAREP.csd"), cov)


def test_h5py_reads_byte_ranges_not_whole_objects(s3: S3, tmp_path: Path) -> None:  # noqa: F811
    """A 12 MB COVAREP-shaped object of 40 videos: listing its entries, and one unit's rows of one video, each
    fetch a small part of it (256 KiB blocks), never the whole object (fsspec's default read-ahead would)."""
    import h5py
    import numpy as np

    from bench.csd_fixtures import write_wide_covarep
    from pipelines.csd import CsdFile

    path = write_wide_covarep(tmp_path / "CMU_MOSEI_COVAREP.csd", videos=40, rows=1000)
    url = s3.url("wide", path.name)
    s3.filesystem().put_file(str(path), url)
    size = path.stat().st_size
    with CsdFile(url) as f:
        assert len(f.ids()) == 40 and f.dim() == 74
        listing = f._remote.cache.total_requested_bytes
    with CsdFile(url) as f:
        rows = f.features("video020", 100, 300)
        ivs = f.intervals("video020")
        unit = f._remote.cache.total_requested_bytes
    with h5py.File(path, "r") as local:
        assert np.array_equal(rows, local["COVAREP/data/video020/features"][100:300])
    assert ivs.shape == (1000, 2)
    assert 0 < listing < size / 4 and 0 < unit < size / 4, (listing, unit, size)  # 2.9 and 2.1 of 12.6 MB here


def test_missing_inputs_are_named_without_a_traceback(s3: S3, csd_url: str, tmp_path: Path) -> None:  # noqa: F811
    for where, words in ((s3.url("releases", "nothing-here"), "no .csd files there"),
                         ("s3://mmolre-no-such-bucket-4xq/CMU_MOSEI", "s3://mmolre-no-such-bucket-4xq/CMU_MOSEI")):
        with pytest.raises(PipelineError) as e:
            sdk_plan(where)
        assert words in str(e.value) and "Traceback" not in str(e.value) and SECRET not in str(e.value)

    env = {**os.environ, **s3.env(), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "flows.cli", "build", "mosei", "--csd-dir", s3.url("releases", "nothing-here"),
           "--out", str(tmp_path / "s"), "--workers", "0", "--quiet"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"mmolre: error: {s3.url('releases', 'nothing-here')}: no .csd files there")
    assert len(done.stderr.strip().splitlines()) == 1 and SECRET not in done.stderr


def test_an_object_gone_after_planning_fails_its_units_only(s3: S3, csd_url: str, csd_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """FACET deleted between planning and the workers' reads: its units fail with the URL named; a rerun after
    it is back builds them."""
    plan = sdk_plan(csd_url)
    fs = s3.filesystem()
    facet = f"{csd_url}/CMU_MOSEI_VisualFacet42.csd"
    fs.rm_file(facet)
    try:
        result = run_build(plan, tmp_path / "s", show_bar=False)
    finally:
        fs.put_file(str(csd_dir / "CMU_MOSEI_VisualFacet42.csd"), facet)
    assert result.n_segments == 0 and result.n_failures > 0
    failures = pq.read_table(tmp_path / "s" / "failures").to_pylist()
    assert all(f"{facet}: does not exist" in f["reason"] and f["stage"] == "fetch" for f in failures)
    assert not [f for f in failures if "Traceback" in f["reason"] or SECRET in f["reason"]]
    assert any("rerun the same build" in w for w in result.manifest.report["warnings"])
    again = run_build(sdk_plan(csd_url), tmp_path / "s", show_bar=False)  # same keys: fetch failures are retried
    assert again.shards_written == result.shards_written and again.n_segments > 0 and again.n_failures == 0


def test_an_object_changed_after_planning_is_not_read(s3: S3, csd_url: str, csd_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """A unit's key holds the ETag it was planned with; a worker that finds another version refuses to read it
    (its rows would be stored under the old key), so a rerun plans the new version."""
    plan = sdk_plan(csd_url)
    fs = s3.filesystem()
    cov = f"{csd_url}/CMU_MOSEI_COVAREP.csd"
    fs.pipe_file(cov, fs.cat_file(cov) + b"\0")  # same HDF5 content, a new ETag
    try:
        result = run_build(plan, tmp_path / "s", show_bar=False)
        assert result.n_segments == 0 and result.n_failures > 0
        reasons = {f["reason"] for f in pq.read_table(tmp_path / "s" / "failures").to_pylist()}
        assert all(r.startswith(f"{cov}: changed since the build was planned") for r in reasons), reasons
        again = run_build(sdk_plan(csd_url), tmp_path / "s", show_bar=False)  # new keys: the object as it is now
        assert again.shards_written == result.shards_written and again.n_segments > 0 and again.n_failures == 0
    finally:
        fs.put_file(str(csd_dir / "CMU_MOSEI_COVAREP.csd"), cov)


def test_relative_media_paths_resolve_against_the_manifest_url() -> None:
    assert resolve_input("s3://b/data/manifest.csv", "clips/a.mp4") == "s3://b/data/clips/a.mp4"
    assert resolve_input("s3://b/data/manifest.csv", "../x/a.mp4") == "s3://b/x/a.mp4"
    assert resolve_input("s3://b/data/manifest.csv", "gs://c/a.mp4") == "gs://c/a.mp4"
    assert resolve_input("/data/manifest.csv", "clips/a.mp4") == "/data/clips/a.mp4"


# -- manifests and media at a URL ------------------------------------------------------------------------------
def _write_manifest(path: Path, transcript: str) -> None:
    rows = [{"video_path": f"clips/{mf.MOSI_ID}.mp4", "segment_id": "mosi", "transcript": transcript,
             "sentiment": "1.5", "split": "train"},
            {"video_path": "clips/gone.mp4", "segment_id": "gone", "transcript": "nothing here", "split": "train"}]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.mark.slow
def test_manifest_at_a_url_builds_the_rows_of_the_local_manifest(s3: S3, tmp_path: Path) -> None:  # noqa: F811
    """The manifest and its clip (a relative path) on S3 build the rows the local copy builds; the row whose
    object is missing fails alone, naming its URL."""
    mf.need(mf.MOSI_CLIP, mf.MOSI_LABELS)
    from pipelines.recipes.videos import VideoConfig, build_videos, plan_videos, process_video_unit
    from pipelines.stages.url_media import process_url_media_unit

    local = tmp_path / "local"
    (local / "clips").mkdir(parents=True)
    (local / "clips" / f"{mf.MOSI_ID}.mp4").write_bytes(mf.MOSI_CLIP.read_bytes())
    _write_manifest(local / "manifest.csv", mf.mosi_transcript())
    url = s3.url("media", "manifest.csv")
    fs = s3.filesystem()
    fs.put_file(str(local / "manifest.csv"), url)
    fs.put_file(str(mf.MOSI_CLIP), s3.url("media", "clips", f"{mf.MOSI_ID}.mp4"))
    clip_url = s3.url("media", "clips", f"{mf.MOSI_ID}.mp4")

    config = VideoConfig(face=None)
    assert plan_videos(local / "manifest.csv", config).stage is process_video_unit
    plan = plan_videos(url, config)
    assert plan.stage is process_url_media_unit and plan.build_info["input"] == url
    build_videos(local / "manifest.csv", tmp_path / "from_local", config, progress=False)
    result = build_videos(url, tmp_path / "from_url", config, progress=False)
    assert result.n_segments == 1 and result.n_failures == 1

    want, got = parquet_hashes(tmp_path / "from_local"), parquet_hashes(tmp_path / "from_url")
    aligned = [k for k in want if k.startswith("aligned/")]
    assert aligned and {k: got.get(k) for k in aligned} == {k: want[k] for k in aligned}
    seg = [k for k in want if k.startswith("segments/")]
    for rel in seg:
        a, b = pq.read_table(named(tmp_path / "from_local")[rel]), pq.read_table(named(tmp_path / "from_url")[rel])
        assert a.drop_columns(["source_path"]).equals(b.drop_columns(["source_path"]))
        assert b.column("source_path").to_pylist() == [clip_url]
    failures = pq.read_table(tmp_path / "from_url" / "failures").to_pylist()
    gone = s3.url("media", "clips", "gone.mp4")
    assert [(f["item_id"], f["source_path"]) for f in failures] == [("gone", gone)]
    assert f"video {gone} does not exist" in failures[0]["reason"] and SECRET not in failures[0]["reason"]
    assert not list(Path(tempfile.gettempdir()).glob("mmolre-media-*"))  # each unit's local copy is deleted
    again = build_videos(url, tmp_path / "from_url", config, progress=False)  # keys from HEADs: nothing to redo
    assert again.shards_written == 0 and again.shards_skipped == result.shards_written


def test_media_urls_in_a_local_manifest_and_a_missing_manifest(s3: S3, tmp_path: Path) -> None:  # noqa: F811
    from pipelines.inputs import read_manifest
    from pipelines.recipes.videos import discover_inputs

    clip = s3.url("plain", "clip.wav")
    s3.filesystem().pipe_file(clip, b"RIFF-not-decoded-here")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"video_path": clip, "transcript": "hi", "split": "test"}) + "\n"
                        + json.dumps({"video_path": "local.wav", "transcript": "hi", "split": "test"}) + "\n")
    parsed = read_manifest(manifest)
    assert [(s.segment_id, s.video_path, s.video_id) for s in parsed.specs] == [("clip_1", clip, "clip")]
    assert [f.source_path for f in parsed.failures] == [str(tmp_path / "local.wav")]

    missing = s3.url("plain", "no-manifest.csv")
    with pytest.raises(PipelineError) as e:
        discover_inputs(missing)
    assert str(e.value) == f"table {missing} does not exist (no such object, or no such bucket)"
    env = {**os.environ, **s3.env(), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "flows.cli", "build", "videos", "--input", missing, "--out", str(tmp_path / "s"),
           "--workers", "0", "--quiet"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith(f"mmolre: error: table {missing} does not exist")
    assert len(done.stderr.strip().splitlines()) == 1 and SECRET not in done.stderr


def test_credentials_in_input_urls_are_refused_without_echoing_them(s3: S3, tmp_path: Path) -> None:  # noqa: F811
    from pipelines.inputs import read_manifest
    from pipelines.recipes.videos import discover_inputs

    secret_url = f"s3://someone:{SECRET}@{s3.bucket}/releases/CMU_MOSEI"
    for call in (lambda: sdk_plan(secret_url), lambda: discover_inputs(secret_url + "/m.csv")):
        with pytest.raises(PipelineError) as e:
            call()
        assert "credentials in a URL are refused" in str(e.value) and SECRET not in str(e.value)
        assert "someone" not in str(e.value)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_path,transcript\n{secret_url}/clip.mp4,hello\n")
    parsed = read_manifest(manifest)
    assert not parsed.specs and "has credentials in its URL; refused" in parsed.failures[0].reason
    assert SECRET not in repr(parsed.failures)


def test_meld_and_mosi_label_files_at_a_url_parse_as_the_local_ones(s3: S3) -> None:  # noqa: F811
    from dataclasses import replace

    from pipelines.recipes.videos import discover_inputs

    meld, mosi = mf.MELD_DIR / "dev_sent_emo.csv", mf.MOSI_LABELS
    mf.need(meld, mosi)
    for local, split in ((meld, "valid"), (mosi, None)):
        url = s3.url("labels", local.name)
        s3.filesystem().put_file(str(local), url)
        a, b = discover_inputs(local, split=split), discover_inputs(url, split=split)
        assert len(b.specs) == len(a.specs) > 100 and b.source == a.source and b.path == url
        assert [replace(s, source_path=None) for s in b.specs] == [replace(s, source_path=None) for s in a.specs]
        assert [(f.item_id, f.reason.replace(url, "X")) for f in b.failures] == \
            [(f.item_id, f.reason.replace(str(local), "X")) for f in a.failures]


def test_a_media_object_gone_before_its_worker_fetches_it_fails_its_segments(s3: S3) -> None:  # noqa: F811
    from pipelines.inputs import SegmentSpec
    from pipelines.records import WorkUnit
    from pipelines.stages.media import MediaUnit, VideoConfig
    from pipelines.stages.url_media import process_url_media_unit

    gone = s3.url("media", "vanished.mp4")
    specs = tuple(SegmentSpec(f"v{i}", "v", gone, None, None, "hi", {}, "test", "manifest", gone) for i in range(2))
    result = process_url_media_unit(WorkUnit("video:" + gone, "k", MediaUnit(gone, specs)), VideoConfig(face=None))
    assert not result.records and [f.item_id for f in result.failures] == ["v0", "v1"]
    assert {f.reason for f in result.failures} == {f"{gone}: does not exist (no such object, or no such bucket)"}
    assert {f.source_path for f in result.failures} == {gone}


def test_what_a_url_input_cannot_be_is_refused_by_name(s3: S3) -> None:  # noqa: F811
    """A URL names one object: an unknown suffix, an MMSA-FET label.csv (its Raw/ folder is read by path) and a
    MELD file without a split are refused naming the URL, as their local counterparts are."""
    from pipelines.recipes.videos import discover_inputs

    fs = s3.filesystem()
    odd, mmsa, meld = s3.url("shapes", "notes.txt"), s3.url("shapes", "label.csv"), s3.url("shapes", "dev_sent_emo.csv")
    fs.pipe_file(odd, b"hello")
    fs.pipe_file(mmsa, b"video_id,clip_id,text,label,mode\nv,1,hi,0.5,train\n")
    fs.pipe_file(meld, b"Utterance,Emotion,Sentiment,Dialogue_ID,Utterance_ID\nhi,joy,positive,0,0\n")
    cases = ((odd, None, f"{odd}: unknown input type '.txt' (a URL input is a .csv or .jsonl manifest"),
             (mmsa, None, f"{mmsa}: an MMSA-FET label.csv at a URL is not supported"),
             (meld, None, f"{meld}: a MELD file needs split="))
    for url, split, message in cases:
        with pytest.raises(PipelineError) as e:
            discover_inputs(url, split=split)
        assert str(e.value).startswith(message) and e.value.source_path == url
    assert [s.segment_id for s in discover_inputs(meld, split="valid").specs] == ["valid_dia0_utt0"]
