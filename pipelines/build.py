"""The build driver: a recipe's plan -> shards on any executor -> the plan's stage per unit -> the writer.

A plan names its stage ("media", "csd", "mmsa", "utterance"); `STAGES` says which function of
`pipelines.stages` that is, and the driver binds the plan's options to it when it writes shards, so control
runs one way: recipe -> plan -> driver -> stage -> writer. The driver owns the loop that the CLI and the Prefect flows share. Where the shards run is the caller's choice: an
executor (None inline, a concurrent.futures pool or a Dask Client) or a `map_shards` function that schedules
them itself (a Prefect flow passes one that makes one task run per shard). What a caller sees of the progress
is its choice too: a `progress` callback hears after every shard, so a flow can update an artifact while the
command line draws a bar. Nothing here imports Prefect.
"""

from __future__ import annotations

import importlib
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
from .records import UnitResult, WorkUnit
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

# stage name -> (module, function): function(unit, options) -> UnitResult. Imported where a shard runs, so a
# .csd build never imports the media stack.
STAGES: dict[str, tuple[str, str]] = {
    "media": ("pipelines.stages.media", "process_video_unit"),
    "csd": ("pipelines.stages.csd", "process_csd_unit"),
    "mmsa": ("pipelines.stages.mmsa", "process_mmsa_unit"),
    "utterance": ("pipelines.stages.utterance", "process_utterance_unit"),
    "media-url": ("pipelines.stages.url_media", "process_url_media_unit"),  # media at URLs: a local copy per unit
    "function": ("pipelines.build", "call_function"),  # build_store's own processing function (tests, one-offs)
}


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
    """The "function" stage: the options are the processing function itself (picklable: top level or a partial)."""
    return function(unit)


class Stage:
    """A plan's stage with its options bound: `stage(unit) -> UnitResult`. Picklable (a name and the options),
    so it travels to any worker; the function is looked up there, once."""

    def __init__(self, name: str, options: Any = None) -> None:
        if name not in STAGES:
            raise PipelineError(f"unknown stage {name!r} (known: {', '.join(STAGES)})", stage="plan")
        self.name, self.options = name, options
        self._function: Callable[[WorkUnit, Any], UnitResult] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options, "_function": None}

    def __call__(self, unit: WorkUnit) -> UnitResult:
        if self._function is None:
            module, function = STAGES[self.name]
            self._function = getattr(importlib.import_module(module), function)
        return self._function(unit, self.options)


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
    writer_stage = Stage(plan.stage, plan.options)  # an unknown stage fails here, before the store is touched
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
    "function" stage, with `process` (picklable) as its options."""
    from .store_writer import BuildConfig

    plan = BuildPlan(name, list(units), "function", list(feature_sets), config or BuildConfig(),
                     dict(build_info or {}), dict(report or {}), process)
    return run_build(plan, store, executor=executor, show_bar=progress, overwrite=overwrite)
