"""Run a function over items on any executor: none (inline), a concurrent.futures pool, or a Dask Client.

lhotse's lesson: extraction code takes an executor instead of choosing one, so the same build runs on a laptop
or a cluster.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def is_dask_client(executor: Any) -> bool:
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "scheduler_info")


def map_unordered(fn: Callable[..., R], items: Iterable[T], executor: Any = None, *args: Any) -> Iterator[R]:
    """Yield `fn(item, *args)` as each finishes. Exceptions propagate: wrap `fn` to turn them into results."""
    items = list(items)
    if executor is None:
        for item in items:
            yield fn(item, *args)
        return
    if is_dask_client(executor):
        from distributed import as_completed

        futures = [executor.submit(fn, item, *args, pure=False) for item in items]
        for fut in as_completed(futures):
            yield fut.result()
            fut.release()
        return
    futures = [executor.submit(fn, item, *args) for item in items]
    for fut in cf.as_completed(futures):
        yield fut.result()
