"""Run a function over items on any executor: none (inline), a concurrent.futures pool, or a Dask Client.

lhotse's lesson: extraction code takes an executor instead of choosing one, so the same build runs on a laptop
or a cluster.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

OnError = Callable[[Any, Exception], Any]  # (item, exception) -> the result to yield in its place
OnWait = Callable[[Sequence[Any]], None]  # called with the unfinished items while nothing finishes


def is_dask_client(executor: Any) -> bool:
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "scheduler_info")


def worker_deaths(exc: BaseException) -> int | None:
    """How many times a task's worker process died before the executor gave up on it (Dask's KilledWorker,
    a broken process pool); None when the error is the task's own."""
    if type(exc).__name__ == "KilledWorker":
        allowed = getattr(exc, "allowed_failures", None)
        return allowed + 1 if isinstance(allowed, int) else 1
    if isinstance(exc, cf.BrokenExecutor):  # a process pool whose worker died
        return 1
    return None


def map_unordered(fn: Callable[..., R], items: Iterable[T], executor: Any = None, *args: Any,
                  on_error: OnError | None = None, on_wait: OnWait | None = None, wait_s: float = 30.0) -> Iterator[R]:
    """Yield `fn(item, *args)` as each finishes.

    An exception (a task's own, or its worker process dying) propagates unless `on_error` turns it into a
    result. While nothing finishes, `on_wait` hears every `wait_s` seconds which items are unfinished, so a
    caller never waits silently. Closing the iterator early (an error, Ctrl-C) cancels the work not yet done:
    use it as `with contextlib.closing(map_unordered(...)) as results:`."""
    items = list(items)
    if executor is None:
        for item in items:
            try:
                result = fn(item, *args)
            except Exception as e:
                if on_error is None:
                    raise
                result = on_error(item, e)
            yield result
        return
    if is_dask_client(executor):
        yield from _dask_unordered(fn, items, executor, args, on_error, on_wait, wait_s)
        return
    futures = {executor.submit(fn, item, *args): item for item in items}
    pending = set(futures)
    try:
        while pending:
            done, pending = cf.wait(pending, timeout=wait_s, return_when=cf.FIRST_COMPLETED)
            if not done and on_wait is not None:
                on_wait([futures[f] for f in futures if f in pending])
            for fut in done:
                yield _outcome(fut, futures[fut], on_error)
    finally:
        for fut in pending:
            fut.cancel()


def _outcome(fut: Any, item: Any, on_error: OnError | None) -> Any:
    try:
        return fut.result()
    except Exception as e:
        if on_error is None:
            raise
        return on_error(item, e)


def _dask_unordered(fn: Callable[..., R], items: list[T], client: Any, args: tuple[Any, ...],
                    on_error: OnError | None, on_wait: OnWait | None, wait_s: float) -> Iterator[R]:
    from distributed import wait

    futures = {client.submit(fn, item, *args, pure=False): item for item in items}
    order = list(futures)
    pending = set(futures)
    try:
        while pending:
            try:
                done, pending = wait(list(pending), timeout=wait_s, return_when="FIRST_COMPLETED")
            except TimeoutError:
                if on_wait is not None:
                    on_wait([futures[f] for f in order if f in pending])
                continue
            pending = set(pending)
            for fut in done:
                result = _outcome(fut, futures[fut], on_error)
                fut.release()
                yield result
    finally:
        if pending:  # stopped early: free the workers rather than finish work nobody will collect
            client.cancel(list(pending), force=True)
