"""The build driver: a recipe's plan -> shards on any executor -> the plan's stage per unit -> the writer.

A plan holds its stage as a function reference (`pipelines.stages.csd.process_csd_unit`, ...: a top-level
function, pickled by its qualified name, so a worker imports only that stage's module) and the driver binds the
plan's options to it when it writes shards, so control runs one way: recipe -> plan -> driver -> stage -> writer.
The driver owns the loop that the CLI and the Prefect flows share. Where the shards run is the caller's choice: an
executor (None inline, a concurrent.futures pool or a Dask Client) or a `map_shards` function that schedules
them itself (a Prefect flow passes one that makes one task run per shard). What a caller sees of the progress
is its choice too: a `progress` callback hears after every shard, so a flow can update an artifact while the
command line draws a bar. Nothing here imports Prefect.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from .errors import PipelineError
from .executors import map_unordered, worker_deaths
from .records import StageFunction, UnitResult, WorkUnit
from .store_writer import (
    BuildPlan,
    BuildResult,
    Shard,
    ShardRecord,
    StoreBuild,
    open_build,
    write_failed_shard,
    write_shard,
)

log = logging.getLogger(__name__)

WAIT_LOG_S = 30.0  # while no shard finishes, say which are running this often

@dataclass(frozen=True)
class BuildProgress:
    """Where a build stands after a shard finished (or, first, before any ran: `record` None)."""

    name: str
    total: int  # shards in the plan
    done: int  # shards written by this run or kept from an earlier one
    skipped: int  # of those, kept from an earlier run
    segments: int  # segments written by this run so far
    failures: int  # failure rows written by this run so far
    record: ShardRecord | None = None  # the shard that just finished

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


WriteShard = Callable[[Shard], ShardRecord]
# (write one shard, the shards to write) -> records as they finish; a shard that cannot be written is left out
MapShards = Callable[[WriteShard, Sequence[Shard]], Iterator[ShardRecord]]
Progress = Callable[[BuildProgress], None]


def shard_title(shard: Shard, noun: str = "units", n: int | None = None) -> str:
    """How a shard is named where people watch it: `shard 00012: 16 videos` (`n`: what it holds, when that is
    not its number of units)."""
    n = len(shard.units) if n is None else n
    return f"shard {shard.shard_id}: {n} {noun if n != 1 else noun.rstrip('s')}"


def _executor_map(executor: Any, build: StoreBuild) -> MapShards:
    """Shards on an executor; a shard whose worker process keeps dying becomes failure rows, tried again next run."""
    started = time.monotonic()

    def failed(shard: Shard, exc: Exception) -> ShardRecord:
        deaths = worker_deaths(exc)
        if deaths is None:
            raise exc
        reason = (f"worker died {deaths} time{'s' if deaths > 1 else ''} processing this shard (likely out of "
                  "memory or a crash in a native library); rerun the build to try it again")
        log.error("%s: shard %s (%s): %s", build.name, shard.shard_id, ", ".join(u.unit_id for u in shard.units[:3]),
                  reason)
        return write_failed_shard(shard, str(build.root), reason, build.config)

    def waiting(running: Sequence[Shard], queued: Sequence[Shard]) -> None:
        ids = ", ".join(s.shard_id for s in running[:8]) + (", ..." if len(running) > 8 else "")
        log.info("%s: %.0f s in, %d shards running (%s), %d queued", build.name, time.monotonic() - started,
                 len(running), ids or "none yet", len(queued))

    def run(write: WriteShard, shards: Sequence[Shard]) -> Iterator[ShardRecord]:
        return map_unordered(write, shards, executor, on_error=failed, on_wait=waiting, wait_s=WAIT_LOG_S)

    return run


def call_function(unit: WorkUnit, function: Callable[[WorkUnit], UnitResult]) -> UnitResult:
    """`build_store`'s stage: the options are the processing function itself (picklable: top level or a partial)."""
    return function(unit)


def stage_name(function: StageFunction) -> str:
    """`module.function`: how a stage is named in errors and logs."""
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


class Stage:
    """A plan's stage with its options bound: `stage(unit) -> UnitResult`. Picklable (a function reference and
    the options), so it travels to any worker, which imports the stage's module and nothing more."""

    def __init__(self, function: StageFunction, options: Any = None) -> None:
        qualname = getattr(function, "__qualname__", "")
        if not callable(function) or not qualname or "<" in qualname or not getattr(function, "__module__", None):
            raise PipelineError(f"stage {function!r} is not a top-level function (a worker imports it by name)",
                                stage="plan")
        self.function, self.options = function, options

    @property
    def name(self) -> str:
        return stage_name(self.function)

    def __call__(self, unit: WorkUnit) -> UnitResult:
        return self.function(unit, self.options)


class _ShardWriter:
    """`write_shard` with the build's arguments bound; a picklable object, so it travels to any worker."""

    def __init__(self, stage: Stage, build: StoreBuild) -> None:
        self.args = (str(build.root), stage, build.feature_sets, build.config)

    def __call__(self, shard: Shard) -> ShardRecord:
        return write_shard(shard, *self.args)


def run_build(plan: BuildPlan, store: str | os.PathLike, *, executor: Any = None, map_shards: MapShards | None = None,
              progress: Progress | None = None, show_bar: bool = True, overwrite: bool = False) -> BuildResult:
    """Build (or complete) `store` from `plan`: open it (lock, resume), write the missing shards, then the manifest.

    An interrupt or an error cancels the work in flight and leaves the store resumable; a shard missing at the
    end is named in the report's `incomplete_shards` and written by the next run."""
    writer_stage = Stage(plan.stage, plan.options)  # a stage a worker cannot import fails here, before the store is touched
    build = open_build(store, plan.name, plan.units, plan.feature_sets, plan.config, plan.build_info, overwrite=overwrite)
    written: list[ShardRecord] = []
    mapper = map_shards or _executor_map(executor, build)
    try:
        bar = tqdm(total=len(build.shards), initial=build.skipped, desc=f"{plan.name}: shards", unit="shard",
                   disable=not show_bar)
        state = BuildProgress(plan.name, len(build.shards), build.skipped, build.skipped, 0, 0)
        if progress is not None:
            progress(state)
        records = mapper(_ShardWriter(writer_stage, build), build.todo)
        with closing(records) if hasattr(records, "close") else nullcontext():  # stop early: cancel what is queued
            for rec in records:
                written.append(rec)
                state = BuildProgress(plan.name, state.total, state.done + 1, state.skipped,
                                      state.segments + rec.n_segments, state.failures + rec.n_failures, rec)
                bar.update(1)
                bar.set_postfix(segments=state.segments, failures=state.failures)
                if progress is not None:
                    progress(state)
        bar.close()
    except BaseException:
        build.close()
        raise
    return build.finish(written, plan.report)


def build_store(store: str | os.PathLike, name: str, units: Sequence[Any], process: Callable[[Any], Any],
                feature_sets: Sequence[Any], config: Any = None, executor: Any = None,
                build_info: dict[str, Any] | None = None, report: dict[str, Any] | None = None, progress: bool = True,
                overwrite: bool = False) -> BuildResult:
    """A build from work units and a processing function, without a recipe (tests, one-off imports): the
    `call_function` stage, with `process` (picklable) as its options."""
    from .store_writer import BuildConfig

    plan = BuildPlan(name, list(units), call_function, list(feature_sets), config or BuildConfig(),
                     dict(build_info or {}), dict(report or {}), process)
    return run_build(plan, store, executor=executor, show_bar=progress, overwrite=overwrite)
