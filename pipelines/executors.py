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
OnWait = Callable[[Sequence[Any], Sequence[Any]], None]  # (running items, queued items) while nothing finishes


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
    result. While nothing finishes, `on_wait` hears every `wait_s` seconds which items are running and which
    are queued, so a caller never waits silently. Closing the iterator early (an error, Ctrl-C) cancels the
    work not yet done: use it as `with contextlib.closing(map_unordered(...)) as results:`."""
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
                unfinished = [f for f in futures if f in pending]
                on_wait([futures[f] for f in unfinished if f.running()], [futures[f] for f in unfinished if not f.running()])
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
    """Submit an item only when a worker thread is free: Dask charges a worker's death to every task assigned
    to it, so tasks queued behind a crashing one would be retried, and given up, with it."""
    from distributed import wait

    todo = list(reversed(items))
    futures: dict[Any, T] = {}
    pending: set[Any] = set()
    threads = _threads(client)  # one round trip to the scheduler; asked again only when the workers may have changed
    try:
        while todo or pending:
            if threads == 0:  # no worker known yet (or the scheduler could not say): ask each round until one is
                threads = _threads(client)
            free = max(1, threads) - len(pending)
            while todo and free > 0:
                item = todo.pop()
                fut = client.submit(fn, item, *args, pure=False)
                futures[fut] = item
                pending.add(fut)
                free -= 1
            try:
                done, not_done = wait(list(pending), timeout=wait_s, return_when="FIRST_COMPLETED")
            except TimeoutError:
                threads = _threads(client)  # workers may have joined or left while nothing finished
                if on_wait is not None:
                    running = _dask_running(client)
                    unfinished = [f for f in futures if f in pending]
                    on_wait([futures[f] for f in unfinished if f.key in running],
                            [futures[f] for f in unfinished if f.key not in running] + todo[::-1])
                continue
            pending = set(not_done)
            if any(fut.status == "error" for fut in done):  # perhaps a worker died: its threads are gone
                threads = _threads(client)
            for fut in done:
                result = _outcome(fut, futures.pop(fut), on_error)
                fut.release()
                yield result
    finally:
        if pending:  # stopped early: free the workers rather than finish work nobody will collect
            client.cancel(list(pending), force=True)


def _threads(client: Any) -> int:
    """Worker threads in the cluster now (0 while none is connected, or when the scheduler cannot say)."""
    try:
        return sum(int(n) for n in client.nthreads().values())
    except Exception:  # noqa: BLE001
        return 0


def _dask_running(client: Any) -> set[Any]:
    """Keys of the tasks the scheduler has on a worker now (empty when it cannot say)."""
    try:
        return {key for keys in client.processing().values() for key in keys}
    except Exception:  # noqa: BLE001 - only a progress message depends on it
        return set()
