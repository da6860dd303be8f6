"""Builds into object storage, against a real S3 API (moto's server on 127.0.0.1, tests/s3_fixtures.py).

A store built into `s3://` holds the same Parquet bytes as one built into a local folder; a build killed with
SIGKILL resumes from the records and manifest it left at the URL; the lock object refuses a second build while
its lease is live and is taken over once its owner is gone; the CLI builds into a URL; no credential is ever
written into the store or printed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.csd_fixtures import write_mosei_fixture
from feature_schemas import StoreError
from pipelines.build import build_store, run_build
from pipelines.recipes.sdk import plan_sdk
from pipelines.store_dirs import LOCK_FILE, SHARD_RECORDS, ObjectLock
from pipelines.store_writer import BuildConfig

from . import synthetic_recipe as syn
from .s3_fixtures import ENV, s3  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[1]
SECRET = ENV["AWS_SECRET_ACCESS_KEY"]


def local_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}


def s3_objects(s3, prefix: str) -> dict[str, bytes]:  # noqa: ANN001, F811 - the fixture's S3
    fs = s3.filesystem()
    base = f"{s3.bucket}/{prefix}"
    return {k[len(base) + 1:]: fs.cat_file(k) for k in fs.find(base)}


def s3_hashes(s3, prefix: str) -> dict[str, str]:  # noqa: ANN001, F811
    return {k: hashlib.sha256(v).hexdigest() for k, v in s3_objects(s3, prefix).items() if k.endswith(".parquet")}


@pytest.fixture(scope="module")
def csd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("csd")
    write_mosei_fixture(folder)
    return folder


def sdk_plan(csd: Path):  # noqa: ANN201
    return plan_sdk(csd, "mosei", config=BuildConfig(units_per_shard=1), batch_videos=1)


def test_csd_release_into_s3_equals_local_build(s3, csd_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    local = run_build(sdk_plan(csd_dir), tmp_path / "local", show_bar=False)
    remote = run_build(sdk_plan(csd_dir), s3.url("csd"), show_bar=False)
    assert remote.store == s3.url("csd") and remote.shards_written == local.shards_written >= 3
    expected = local_hashes(tmp_path / "local")
    assert expected and s3_hashes(s3, "csd") == expected
    objects = s3_objects(s3, "csd")
    manifest = json.loads(objects["manifest.json"])
    assert {k: v["sha256"] for k, v in manifest["files"].items()} == expected  # readers trust what it lists
    assert manifest["files"] == json.loads((tmp_path / "local/manifest.json").read_text())["files"]
    assert "README.md" in objects and not [k for k in objects if k.startswith("_build/") or ".tmp-" in k]
    assert not [k for k, v in objects.items() if SECRET.encode() in v or s3.endpoint.encode() in v]

    again = run_build(sdk_plan(csd_dir), s3.url("csd"), show_bar=False)  # resume from the manifest at the URL
    assert (again.shards_written, again.shards_skipped) == (0, local.shards_written)
    assert s3_hashes(s3, "csd") == expected


KILL_SCRIPT = """
import json, sys
from pipelines.build import build_store
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn
r = build_store(sys.argv[1], "synthetic", syn.make_units(10, sleep=0.15), syn.process, syn.FEATURE_SETS,
                BuildConfig(units_per_shard=1), progress=False)
print(json.dumps({"written": r.shards_written, "skipped": r.shards_skipped}))
"""


@pytest.mark.slow
def test_killed_build_resumes_from_the_url_and_equals_a_local_build(s3, tmp_path: Path) -> None:  # noqa: F811
    build_store(tmp_path / "local", "synthetic", syn.make_units(10), syn.process, syn.FEATURE_SETS,
                BuildConfig(units_per_shard=1), progress=False)
    expected = local_hashes(tmp_path / "local")
    url, fs = s3.url("killed"), s3.filesystem()
    env = {**os.environ, **s3.env(), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, url], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = f"{s3.bucket}/killed/{SHARD_RECORDS}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        fs.invalidate_cache()
        if len(fs.glob(f"{records}/part-*.json")) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fs.invalidate_cache()
    committed = len(fs.glob(f"{records}/part-*.json"))
    assert 3 <= committed < 10, f"the kill did not land mid-build ({committed} of 10 shards recorded)"
    assert fs.exists(f"{s3.bucket}/killed/{LOCK_FILE}")  # a dead build's lock stays behind
    assert not fs.exists(f"{s3.bucket}/killed/manifest.json")

    rerun = subprocess.run([sys.executable, "-c", KILL_SCRIPT, url], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "taking over the lock of a build that is gone" in rerun.stderr  # its owner's process is gone
    counts = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert counts == {"written": 10 - committed, "skipped": committed}  # only the missing shards
    assert s3_hashes(s3, "killed") == expected
    left = s3_objects(s3, "killed")
    assert not [k for k in left if k.startswith("_build/") or ".tmp-" in k]


def test_live_lease_refuses_a_second_build_and_a_stale_one_is_taken_over(s3, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    from feature_schemas.storage import RemoteFiles

    url = s3.url("locked")
    units = syn.make_units(2)
    with ObjectLock(RemoteFiles(url)):
        with pytest.raises(StoreError, match=r"another build is writing this store \(host .*pid \d+.*lease until"):
            build_store(url, "synthetic", units, syn.process, syn.FEATURE_SETS, progress=False)
    assert not s3.filesystem().exists(f"{s3.bucket}/locked/{LOCK_FILE}")  # released at the end of the block

    files = RemoteFiles(url)  # another machine's build whose lease ran out: stale, whatever its pid
    files.put(LOCK_FILE, json.dumps({"owner": "x", "host": "elsewhere", "pid": 1, "expires": time.time() - 5}).encode())
    with caplog.at_level(logging.WARNING, logger="pipelines.store_dirs"):
        result = build_store(url, "synthetic", units, syn.process, syn.FEATURE_SETS, progress=False)
    assert result.n_segments and "its lease ended" in caplog.text

    files.put(LOCK_FILE, json.dumps({"owner": "x", "host": "elsewhere", "pid": 1, "expires": time.time() + 60}).encode())
    with pytest.raises(StoreError, match="host elsewhere, pid 1"):  # live on another host: refused
        build_store(url, "synthetic", units, syn.process, syn.FEATURE_SETS, progress=False)
    files.remove(LOCK_FILE)


def test_url_that_is_not_a_store_or_names_keys_outside_it_is_refused_and_left_alone(s3) -> None:  # noqa: F811
    from feature_schemas import OutsideStoreError
    from feature_schemas.storage import RemoteFiles

    units = syn.make_units(2)
    other = RemoteFiles(s3.url("notastore"))
    other.put("photos/cat.jpg", b"not ours")
    with pytest.raises(StoreError, match=r"notastore: is not empty and not a store \(found 'photos'\)"):
        build_store(s3.url("notastore"), "synthetic", units, syn.process, syn.FEATURE_SETS, progress=False)
    assert other.get("photos/cat.jpg")[0] == b"not ours" and other.get(LOCK_FILE) is None

    url = s3.url("crafted")
    build_store(url, "synthetic", units, syn.process, syn.FEATURE_SETS, progress=False)
    crafted = RemoteFiles(url)
    manifest = json.loads(crafted.get("manifest.json")[0])
    entry = next(iter(manifest["files"].values()))
    manifest["files"]["../notastore/photos/cat.jpg"] = entry
    crafted.put("manifest.json", json.dumps(manifest).encode())
    with pytest.raises(OutsideStoreError, match="'../notastore/photos/cat.jpg' is not a relative path inside the store"):
        build_store(url, "synthetic", units, syn.process, syn.FEATURE_SETS, progress=False, overwrite=True)
    assert other.get("photos/cat.jpg")[0] == b"not ours"


def test_lease_is_renewed_while_the_build_runs_and_a_lost_lease_stops_the_commit(s3) -> None:  # noqa: F811
    from feature_schemas.storage import RemoteFiles

    files = RemoteFiles(s3.url("lease"))
    lock = ObjectLock(files, lease_s=1.5).acquire()
    try:
        first = json.loads(files.get(LOCK_FILE)[0])
        time.sleep(1.2)  # past a third of the lease: renewed at least once
        renewed = json.loads(files.get(LOCK_FILE)[0])
        assert renewed["owner"] == first["owner"] and renewed["expires"] > first["expires"]
        assert renewed["host"] == socket.gethostname() and renewed["pid"] == os.getpid()
        files.put(LOCK_FILE, json.dumps({"owner": "thief", "expires": time.time() + 60}).encode())
        with pytest.raises(StoreError, match="not writing the manifest"):
            lock.check()
    finally:
        lock.release()
    assert files.get(LOCK_FILE) is not None  # another build's lock is never deleted
    files.remove(LOCK_FILE)


@pytest.mark.slow
def test_cli_builds_mosei_into_s3(s3, csd_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    env = {**os.environ, **s3.env(), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "flows.cli", "build", "mosei", "--csd-dir", str(csd_dir), "--out", s3.url("cli"),
           "--workers", "0", "--quiet", "--json"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["store"] == s3.url("cli") and sum(summary["counts"]["segments"].values()) > 0
    assert SECRET not in done.stdout + done.stderr
    objects = s3_objects(s3, "cli")
    assert "manifest.json" in objects and not [k for k, v in objects.items() if SECRET.encode() in v]

    bad = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
           "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}
    unreachable = subprocess.run(cmd, cwd=REPO, env=bad, capture_output=True, text=True, timeout=180)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"mmolre: error: {s3.url('cli')}") and "Traceback" not in unreachable.stderr
    assert SECRET not in unreachable.stderr


@pytest.mark.slow
@pytest.mark.prefect
def test_work_pool_worker_builds_mosei_into_s3(s3, csd_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """`make deploy` + `make worker` (a process work pool), then `build-mosei-features/default` into s3://; the
    worker's environment carries the S3 endpoint and credentials, the run's parameters only the URL."""
    from flows.local_prefect import prefect_server, run_deployment

    venv = Path(sys.executable).parents[1]
    with prefect_server(tmp_path / "prefect") as env:
        env = {**env, **s3.env(), "PYTHONPATH": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "2"}
        make = ["make", "-C", str(REPO), f"VENV={venv}", "-o", str(venv / ".installed"),
                f"PREFECT_ENV=PREFECT_HOME={env['PREFECT_HOME']} PREFECT_API_URL={env['PREFECT_API_URL']}"]
        deploy = subprocess.run([*make, "deploy"], env=env, capture_output=True, text=True, timeout=300)
        assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
        with open(tmp_path / "worker.log", "w") as log:
            worker = subprocess.Popen([*make, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            done = run_deployment(env, "build-mosei-features/default",
                                  {"csd_dir": str(csd_dir), "store": s3.url("pool"), "n_workers": 0,
                                   "batch_videos": 1, "units_per_shard": 1}, timeout=300)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        assert done.returncode == 0, done.stdout[-3000:] + (tmp_path / "worker.log").read_text()[-3000:]
        assert "Completed" in done.stdout
    local = run_build(sdk_plan(csd_dir), tmp_path / "local", show_bar=False)
    assert local.n_segments and s3_hashes(s3, "pool") == local_hashes(tmp_path / "local")
    assert SECRET not in (tmp_path / "worker.log").read_text() + done.stdout


def test_a_filesystem_without_conditional_writes_locks_by_reading_back(tmp_path: Path) -> None:
    """fsspec's in-memory filesystem stands for one without S3's conditional PUT: the lock is written, read back
    after a pause, and a live one still refuses a second build; the store still equals a local build."""
    import fsspec

    from feature_schemas.storage import RemoteFiles

    units = syn.make_units(4)
    url = "memory://mmolre-test/store"
    build_store(url, "synthetic", units, syn.process, syn.FEATURE_SETS, BuildConfig(units_per_shard=2), progress=False)
    build_store(tmp_path / "local", "synthetic", units, syn.process, syn.FEATURE_SETS, BuildConfig(units_per_shard=2),
                progress=False)
    fs = fsspec.filesystem("memory")
    got = {p.split("/store/", 1)[1]: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in fs.find("/mmolre-test/store")
           if p.endswith(".parquet")}
    assert got == local_hashes(tmp_path / "local")
    files = RemoteFiles(url)
    assert not files.conditional_writes
    with ObjectLock(files), pytest.raises(StoreError, match="another build is writing this store"):
        ObjectLock(RemoteFiles(url)).acquire()
    assert files.get(LOCK_FILE) is None
    fs.rm("/mmolre-test", recursive=True)


def test_a_changed_endpoint_in_the_environment_is_followed(s3, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """fsspec caches filesystem instances regardless of the environment; the writer does not reuse one made for
    another endpoint (a second test module's server, another profile)."""
    from feature_schemas.storage import RemoteFiles

    from .s3_fixtures import _free_port

    RemoteFiles(s3.url("first")).put("x", b"1")  # an instance for the module's endpoint now exists
    dead = f"http://127.0.0.1:{_free_port()}"
    for key, value in (("AWS_ENDPOINT_URL", dead), ("AWS_ENDPOINT_URL_S3", dead), ("AWS_MAX_ATTEMPTS", "1")):
        monkeypatch.setenv(key, value)
    with pytest.raises(StoreError, match="cannot read .*endpoint unreachable"):
        RemoteFiles(s3.url("first")).get("x")
    monkeypatch.undo()
    assert RemoteFiles(s3.url("first")).get("x")[0] == b"1"


def test_credentials_put_into_a_url_never_reach_a_message(s3) -> None:  # noqa: F811
    url = f"s3://AKIAEXAMPLE:{SECRET}@{s3.bucket}/inline"
    with pytest.raises(StoreError) as caught:
        build_store(url, "synthetic", syn.make_units(1), syn.process, syn.FEATURE_SETS, progress=False)
    assert SECRET not in str(caught.value) and "AKIAEXAMPLE" not in str(caught.value)
    assert str(caught.value).startswith(f"s3://{s3.bucket}/inline")
