"""Where Dask work runs: an existing cluster by address (parameter or MMOLRE_DASK_ADDRESS), else a local cluster
sized to this machine, bound to 127.0.0.1; its workers forked from a preloaded forkserver and warmed up with a
build's models. Plain Dask: the command line, the Prefect flows (flows/build_features.py wraps it in a task
runner) and the benchmarks use it alike."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
import psutil
from distributed import WorkerPlugin

DASK_ADDRESS_ENV = "MMOLRE_DASK_ADDRESS"
log = logging.getLogger(__name__)


def resolve_address(address: str | None = None) -> str | None:
    return address or os.environ.get(DASK_ADDRESS_ENV) or None


def default_workers(memory_per_worker_gb: float = 2.0) -> int:
    """One single-threaded worker process per core, fewer if memory is short."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    by_memory = int(psutil.virtual_memory().total / 2**30 // memory_per_worker_gb)
    return max(1, min(cores, by_memory))


def local_cluster_kwargs(n_workers: int | None = None) -> dict[str, Any]:
    return {
        "n_workers": n_workers or default_workers(),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
        "silence_logs": logging.WARNING,
    }


def quiet_dask_logs(level: int = logging.WARNING) -> None:
    """Dask configures a level per logger (scheduler, nanny, ...); lift every one of them to `level`."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(level)
    # tornado logs an exception inside one of distributed's own callbacks (an interrupt racing its
    # utils.cancel: NameError 'future') as a traceback; the build reports its own failures, so only CRITICAL.
    # For the whole build, since the interrupt lands wherever the client waits; the close needs nothing more
    logging.getLogger("tornado.application").setLevel(logging.CRITICAL)


# A task whose worker process dies is retried on another worker this many times, then given up (KilledWorker:
# the store writer records its shard as failed).
WORKER_RETRIES = 2
LOCAL_DASK_CONFIG: dict[str, Any] = {
    "distributed.scheduler.allowed-failures": WORKER_RETRIES,
    "distributed.scheduler.worker-saturation": 1.0,
    # forkserver children end with os._exit: a worker that has loaded torch and transformers does not spend
    # seconds tearing its modules down, which made every close end with "Worker process still alive after
    # 4.0 seconds, killing"
    "distributed.worker.multiprocessing-method":
        "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn",
}
CLOSE_TIMEOUT_S = 10.0  # a normal close, workers idle
INTERRUPT_CLOSE_TIMEOUT_S = 3.0  # after Ctrl-C or an error: workers may be mid-task; don't wait for them


# Imported once by the forkserver that a local cluster's workers are forked from, instead of once per worker
# (torch alone is ~1.5 CPU s per process): pure imports, no model and no thread, so forking after them is safe.
FORKSERVER_PRELOAD = ("torch", "pipelines.stages.media")


def preload_forkserver(modules: tuple[str, ...] = FORKSERVER_PRELOAD) -> bool:
    """Add `modules` to what distributed's forkserver imports before forking workers. Takes effect only if this
    process has not started its forkserver yet; False when the start method is not forkserver."""
    from distributed.utils import get_mp_context

    ctx = get_mp_context()  # sets distributed's own preload list once
    if ctx.get_start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    current = list(getattr(getattr(forkserver, "_forkserver", None), "_preload_modules", None) or ["distributed"])
    ctx.set_forkserver_preload(current + [m for m in modules if m not in current])
    return True


def start_forkserver_early(address: str | None = None) -> bool:
    """Start the forkserver that a local cluster forks its workers from now, before the build is planned: its
    preload (torch and the pipeline, ~1.5 s) then runs on another core while this process plans, instead of
    after. Nothing for an existing cluster or another start method; False then."""
    if resolve_address(address):
        return False
    with dask.config.set(LOCAL_DASK_CONFIG):
        if not preload_forkserver():
            return False
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True


@contextmanager
def local_dask_config(address: str | None = None, preload: bool = True) -> Iterator[None]:
    """LOCAL_DASK_CONFIG for as long as a local cluster lives (its restarted workers read it too), and (`preload`)
    the forkserver preload of FORKSERVER_PRELOAD; nothing when the work goes to an existing cluster, whose own
    settings stand."""
    if resolve_address(address):
        yield
        return
    with dask.config.set(LOCAL_DASK_CONFIG):
        if preload:
            preload_forkserver()
        yield


class WarmUp(WorkerPlugin):
    """A Dask worker plugin: as each worker starts (and on the workers already running when it is registered),
    start loading a build's models in a background thread (`pipelines.stages.media.start_warm_up`), so a cold
    worker's imports and model loading overlap the client's planning instead of delaying the first unit.
    `config` is a `VideoConfig` (pickled to the workers)."""

    name = "mmolre-warm-up"

    def __init__(self, config: Any) -> None:
        self.config = config

    def setup(self, worker: Any = None) -> None:
        from pipelines.stages.media import start_warm_up

        start_warm_up(self.config)


def warm_config(plan: Any) -> Any:
    """The VideoConfig whose models a build plan's workers should load as they start: a media-stage plan (local
    or URL media) with at least one media file (text-only and imported stores would load models they never use),
    else None."""
    from pipelines.stages.media import MediaUnit, VideoConfig

    if not isinstance(getattr(plan, "options", None), VideoConfig):
        return None
    return plan.options if any(isinstance(u.payload, MediaUnit) for u in plan.units) else None


def register_warm_up(client: Any, config: Any) -> None:
    """Register `WarmUp(config)` on the client's cluster; a cluster that refuses it only loses the head start."""
    try:
        client.register_plugin(WarmUp(config), name=WarmUp.name)
    except Exception as e:  # noqa: BLE001 - warming up is an optimisation, never a reason to fail a build
        log.warning("Dask: could not register the warm-up plugin (%s: %s); workers load models on first use",
                    type(e).__name__, e)


@contextmanager
def dask_client(address: str | None = None, n_workers: int | None = None, warm: Any = None,
                preload: bool = True) -> Iterator[Any]:
    """A distributed Client (an Executor) for plain-function builds from the command line.

    A local cluster retries a task whose worker dies `WORKER_RETRIES` times, and is closed on the way out
    (quickly after an interrupt: running tasks are abandoned, the store they write stays resumable). `warm`: a
    `VideoConfig` whose models every worker starts loading at once (`WarmUp`). `preload`: its workers fork with
    torch and the media stage imported (FORKSERVER_PRELOAD); builds that read features already computed (.csd,
    MMSA, bc-LSTM) use neither and skip it."""
    from distributed import Client, LocalCluster

    quiet_dask_logs()
    address = resolve_address(address)
    if address:
        with Client(address) as client:
            log.info("Dask: connected to %s (dashboard %s)", address, client.dashboard_link)
            if warm is not None:
                register_warm_up(client, warm)
            yield client
        return
    with local_dask_config(preload=preload):
        cluster = LocalCluster(**local_cluster_kwargs(n_workers))
        client: Any = None
        ok = False
        try:
            client = Client(cluster)
            quiet_dask_logs()
            if warm is not None:
                register_warm_up(client, warm)
            log.info("Dask: local cluster with %d workers, dashboard %s", len(cluster.workers), client.dashboard_link)
            yield client
            ok = True
        finally:
            _close(cluster, client, CLOSE_TIMEOUT_S if ok else INTERRUPT_CLOSE_TIMEOUT_S, abandon=not ok)


def _close(cluster: Any, client: Any, timeout: float, abandon: bool) -> None:
    """Close the client, then the cluster. `abandon` (Ctrl-C, an error): kill the worker processes first
    instead of waiting for their tasks; a shard cut short leaves no visible file, so the store stays resumable.
    A slow close is logged, never allowed to replace the build's own outcome."""
    try:
        if client is not None:
            client.close(timeout=timeout)
    except Exception as e:  # noqa: BLE001 - closing must go on to the cluster
        log.debug("Dask client close: %s", e)
    if abandon:
        _kill_workers(cluster)
    try:
        cluster.close(timeout=timeout)
    except Exception as e:  # noqa: BLE001
        log.warning("Dask: the local cluster did not close cleanly within %.0f s (%s: %s)", timeout, type(e).__name__, e)


def _kill_workers(cluster: Any) -> None:
    """SIGKILL each worker process, telling its nanny first not to start another one."""
    for nanny in list(getattr(cluster, "workers", {}).values()):
        try:
            pid = nanny.pid
            nanny.close_gracefully(reason="mmolre-interrupted")
            if pid:
                os.kill(pid, signal.SIGKILL)
        except (AttributeError, ProcessLookupError, PermissionError) as e:
            log.debug("Dask: could not stop a worker at once: %s", e)
