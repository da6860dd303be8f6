"""Where Dask work runs: an existing cluster by address (parameter or MMOLRE_DASK_ADDRESS), else a local cluster
sized to this machine, bound to 127.0.0.1."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil

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


def task_runner(address: str | None = None, n_workers: int | None = None):
    """A prefect-dask task runner for either an existing cluster or a local one."""
    from prefect_dask import DaskTaskRunner

    address = resolve_address(address)
    if address:
        log.info("Dask: using the existing cluster at %s", address)
        return DaskTaskRunner(address=address)
    kwargs = local_cluster_kwargs(n_workers)
    log.info("Dask: starting a local cluster of %d worker processes", kwargs["n_workers"])
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)


def quiet_dask_logs(level: int = logging.WARNING) -> None:
    """Dask configures a level per logger (scheduler, nanny, ...); lift every one of them to `level`."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(level)


@contextmanager
def dask_client(address: str | None = None, n_workers: int | None = None) -> Iterator[Any]:
    """A distributed Client (an Executor) for plain-function builds from the command line."""
    from distributed import Client, LocalCluster

    quiet_dask_logs()
    address = resolve_address(address)
    if address:
        with Client(address) as client:
            log.info("Dask: connected to %s (dashboard %s)", address, client.dashboard_link)
            yield client
        return
    with LocalCluster(**local_cluster_kwargs(n_workers)) as cluster, Client(cluster) as client:
        quiet_dask_logs()
        log.info("Dask: local cluster with %d workers, dashboard %s", len(cluster.workers), client.dashboard_link)
        yield client
