"""A build on a Dask cluster of separate processes writing into object storage.

`dask scheduler` and two `dask worker` processes run as subprocesses, each in its own temporary working folder;
they share nothing but the store URL and the S3 environment (moto's server on 127.0.0.1). One worker is killed
mid-build and a new one joins; the store ends equal, file by file (sha256), to a local build.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.csd_fixtures import write_mosei_fixture
from pipelines.build import build_store, run_build
from pipelines.store_dirs import SHARD_RECORDS
from pipelines.store_writer import BuildConfig

from . import synthetic_recipe as syn
from .s3_fixtures import _free_port, s3  # noqa: F401 - the fixture
from .store_fixtures import ctrl_c_reaches_it
from .test_s3_build import local_hashes, s3_hashes, sdk_plan

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

DRIVER = """
import json, sys
from pipelines.dask_cluster import dask_client
from pipelines.build import build_store
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn
with dask_client(sys.argv[2]) as client:  # what `--dask-address` does
    r = build_store(sys.argv[1], "synthetic", syn.make_units(16, sleep=0.4), syn.process, syn.FEATURE_SETS,
                    BuildConfig(units_per_shard=1), executor=client, progress=False)
print(json.dumps({"written": r.shards_written, "failures": r.n_failures}))
"""


class Cluster:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env, self.port = tmp, env, _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        folder = self.tmp / name  # its own working folder: nothing on disk is shared
        folder.mkdir()
        log = open(folder / "log.txt", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([str(BIN / "dask"), *args], cwd=folder, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def scheduler(self) -> None:
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"])

    def worker(self, name: str) -> subprocess.Popen:
        return self._start(name, ["worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                  "--name", name, "--local-directory", str(self.tmp / name / "dask"),
                                  "--host", "127.0.0.1"])

    def wait_for_workers(self, n: int, timeout: float = 60) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(n, timeout=timeout)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(s3, tmp_path: Path) -> Iterator[Cluster]:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3.env(), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    c = Cluster(tmp_path, env)
    try:
        c.scheduler()
        c.worker("worker1")
        c.worker("worker2")
        c.wait_for_workers(2)
        yield c
    finally:
        c.stop()


def test_build_on_a_separate_cluster_survives_a_killed_worker_and_equals_a_local_build(
        s3, cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    build_store(tmp_path / "local", "synthetic", syn.make_units(16), syn.process, syn.FEATURE_SETS,
                BuildConfig(units_per_shard=1), progress=False)
    url, fs = s3.url("cluster"), s3.filesystem()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, url, cluster.address], cwd=tmp_path, env=cluster.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = f"{s3.bucket}/cluster/{SHARD_RECORDS}/part-*.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and driver.poll() is None:
        fs.invalidate_cache()
        if len(fs.glob(records)) >= 3:
            break
        time.sleep(0.05)
    victim = cluster.procs[1]  # worker1, mid-task
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    fs.invalidate_cache()
    assert len(fs.glob(records)) < 16, "the worker was killed after the build had finished"
    cluster.worker("worker3")  # a new worker joins the running build
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"written": 16, "failures": 0}
    assert s3_hashes(s3, "cluster") == local_hashes(tmp_path / "local")
    fs.invalidate_cache()
    assert not [k for k in fs.find(f"{s3.bucket}/cluster") if "/_build/" in k or ".tmp-" in k]

    # The same cluster through the command line: a MOSEI-shaped .csd release, `--dask-address`.
    csd = tmp_path / "csd"
    write_mosei_fixture(csd)
    run_build(sdk_plan(csd), tmp_path / "csd_local", show_bar=False)
    cmd = [sys.executable, "-m", "flows.cli", "build", "mosei", "--csd-dir", str(csd), "--out", s3.url("csd"),
           "--batch-videos", "1", "--units-per-shard", "1", "--dask-address", cluster.address, "--quiet", "--json"]
    done = subprocess.run(cmd, cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert s3_hashes(s3, "csd") == local_hashes(tmp_path / "csd_local")


INTERRUPTED = """
import sys
from pipelines.dask_cluster import dask_client
from pipelines.build import build_store
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn
try:
    with dask_client(n_workers=2, preload=False) as client:
        build_store(sys.argv[1], "synthetic", syn.make_units(8, sleep=5), syn.process, syn.FEATURE_SETS,
                    BuildConfig(units_per_shard=1), executor=client, progress=False)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
"""


def test_ctrl_c_on_a_local_cluster_prints_no_library_traceback(tmp_path: Path) -> None:
    """An interrupt lands inside distributed's own waiting (its utils.sync and cancel race): the build stops with
    its one line and no traceback from tornado, asyncio or distributed, also while the cluster is killed."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for delay in (0.2, 2.0):  # while the first tasks start, and while every worker is busy
        store = tmp_path / f"s{delay}"
        proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(store)], cwd=REPO, env=env,
                                stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=ctrl_c_reaches_it)
        deadline = time.monotonic() + 120
        while not (store / "_build" / "plan.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and err.strip() == "interrupted", err[-3000:]
