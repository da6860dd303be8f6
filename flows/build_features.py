"""Prefect flows that build feature stores: one per recipe of `pipelines.recipes.registry` (CMU-MOSEI / CMU-MOSI
from the SDK release, raw videos, MMSA pickles, the MOSI utterance release, MOSEI text, ...), generated from the
recipe's typed options: the flow's parameters, their descriptions and its name come from the recipe.

Each flow plans the build with its recipe and hands the plan to the one build driver (`pipelines.build.run_build`),
passing the Prefect-backed pieces: `PrefectShards` makes one task run per shard (named after what it holds, with
retries, on Dask or inline), `ArtifactProgress` keeps a progress artifact up to date as shards finish; at the end
a markdown artifact shows the build summary with its drop report. All the work is in `pipelines`; nothing there
knows Prefect.
"""

from __future__ import annotations

import inspect
import logging
import textwrap
from collections.abc import Iterator, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.futures import as_completed

from flows.options import build_config
from flows.summary import build_summary_markdown, summarize_build
from pipelines.build import BuildProgress, WriteShard, run_build, shard_title
from pipelines.collapse import Mode
from pipelines.dask_cluster import dask_client, local_cluster_kwargs, local_dask_config, resolve_address
from pipelines.extract.registry import default as extractor_default
from pipelines.recipes.base import Recipe
from pipelines.recipes.registry import RECIPES
from pipelines.store_writer import BuildPlan, Shard, ShardRecord

log = logging.getLogger(__name__)
DEFAULT_FACE = extractor_default("face")  # the registry's default backend (flows/video_to_model.py)
SHARD_RETRIES = 2
SHARD_RETRY_DELAYS_S = [2, 10]


@task(name="write-shard", retries=SHARD_RETRIES, retry_delay_seconds=SHARD_RETRY_DELAYS_S, cache_policy=NO_CACHE)
def write_shard_task(write: WriteShard, shard: Shard) -> ShardRecord:
    """One shard through the driver's writer (units -> stage -> rows -> Parquet); a retry writes it afresh."""
    return write(shard)


def _logger() -> Any:
    """The flow run's logger; a plain logger when the flow's function is called directly (`flow.fn(...)`)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _in_flow_run() -> bool:
    return FlowRunContext.get() is not None


# -- what a shard's task run is called ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardNaming:
    """How a recipe's shards are titled in the UI: the noun of what a unit holds, and where in a unit's payload
    a list says how many (an SDK unit is a batch of videos); without one, a unit counts as one."""

    noun: str
    count_at: tuple[str, ...] = ()

    def held(self, unit: Any) -> int | None:
        """How many items the unit holds; None when its payload does not say (it is then counted as a unit)."""
        if not self.count_at:
            return 1
        value = unit.payload
        for name in self.count_at:
            value = value.get(name) if isinstance(value, dict) else getattr(value, name, None)
        return len(value) if isinstance(value, Sized) and not isinstance(value, str) else None

    def title(self, shard: Shard) -> str:
        """`shard 00012: 16 videos`; `N units` when a unit's size cannot be read (never a wrong count)."""
        counts = [self.held(u) for u in shard.units]
        if any(c is None for c in counts):
            return shard_title(shard, "units")
        return shard_title(shard, self.noun, sum(c for c in counts if c is not None))



def task_runner(address: str | None = None, n_workers: int | None = None) -> Any:
    """A prefect-dask task runner for either an existing cluster or a local one."""
    from prefect_dask import DaskTaskRunner

    address = resolve_address(address)
    if address:
        log.info("Dask: using the existing cluster at %s", address)
        return DaskTaskRunner(address=address)
    kwargs = local_cluster_kwargs(n_workers)
    log.info("Dask: starting a local cluster of %d worker processes", kwargs["n_workers"])
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)



# -- the driver's map_shards and progress, backed by Prefect ------------------------------------------------------

class PrefectShards:
    """The driver's `map_shards`: one task run per shard on a Dask cluster (an existing one by address, else a
    local one of `n_workers`), or inline when `n_workers` is 0. A shard whose task fails past its retries is
    left out: the driver records it as incomplete and the next run writes it."""

    def __init__(self, naming: ShardNaming, dask_address: str | None = None, n_workers: int | None = None) -> None:
        self.naming, self.dask_address, self.n_workers = naming, dask_address, n_workers

    def __call__(self, write: WriteShard, shards: Sequence[Shard]) -> Iterator[ShardRecord]:
        if not shards:
            return iter(())
        if self.n_workers == 0:
            return self._inline(write, shards)
        return self._on_dask(write, shards)

    def _task(self, shard: Shard) -> Any:
        return write_shard_task.with_options(task_run_name=self.naming.title(shard))

    def _inline(self, write: WriteShard, shards: Sequence[Shard]) -> Iterator[ShardRecord]:
        for shard in shards:
            state = self._task(shard)(write, shard, return_state=True)
            if state.is_completed():
                yield state.result()
            else:
                _logger().error("%s failed past its retries: %s", self.naming.title(shard), state.message)

    def _on_dask(self, write: WriteShard, shards: Sequence[Shard]) -> Iterator[ShardRecord]:
        runner = task_runner(self.dask_address, self.n_workers)
        with local_dask_config(self.dask_address), runner:  # local workers exit at once when the runner closes
            futures = {runner.submit(self._task(s), {"write": write, "shard": s}): s for s in shards}
            for fut in as_completed(list(futures)):
                try:
                    yield fut.result()
                except Exception as e:  # noqa: BLE001 - past its retries: left for the next run, the rest goes on
                    _logger().error("%s failed past its retries: %s: %s", self.naming.title(futures[fut]),
                                    type(e).__name__, e)


class ArtifactProgress:
    """The driver's `progress`: a Prefect progress artifact (percent of shards done) created before the first
    shard and updated after each, plus one log line per shard. Outside a flow run only the log line."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.artifact: UUID | None = None

    def __call__(self, p: BuildProgress) -> None:
        percent = round(100.0 * p.fraction, 1)
        described = f"{p.name}: {p.done} of {p.total} shards ({p.skipped} already written), {p.segments} segments"
        if _in_flow_run():
            if self.artifact is None:
                self.artifact = create_progress_artifact(percent, key=self.key, description=described)
            else:
                update_progress_artifact(self.artifact, percent, description=described)
        if p.record is not None:
            _logger().info("shard %s done (%d of %d): %d segments, %d failures", p.record.shard_id, p.done, p.total,
                           p.record.n_segments, p.record.n_failures)


def artifact_key(name: str, kind: str = "build") -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") + f"-{kind}"


def _warn_relative(**paths: str | None) -> None:
    """Deployment parameters are paths on the serving machine: say where a relative one is read."""
    for name, value in paths.items():
        if value and "://" not in value and not Path(value).is_absolute():
            _logger().warning("%s %r is a relative path: read as %s on the machine serving this flow", name, value,
                              Path(value).resolve())


@contextmanager
def _where_shards_run(naming: ShardNaming, dask_address: str | None, n_workers: int | None) -> Iterator[dict[str, Any]]:
    """The driver's scheduling arguments: Prefect task runs inside a flow run; outside one (the flow's function
    called directly, `flow.fn(...)`) the command line's plain executor, so no Prefect API is needed."""
    if _in_flow_run():
        yield {"map_shards": PrefectShards(naming, dask_address, n_workers)}
    elif n_workers == 0:
        yield {"executor": None}
    else:
        with dask_client(dask_address, n_workers) as client:
            yield {"executor": client}


def run_build_plan(plan: BuildPlan, store: str, naming: ShardNaming, dask_address: str | None, n_workers: int | None,
                   overwrite: bool = False) -> dict[str, Any]:
    """Carry out a recipe's plan with the build driver, Prefect-backed; publish the summary with its drop report.

    Raises when a shard is still missing at the end (it failed past its retries): the store keeps what was written
    and a rerun completes it."""
    logger = _logger()
    logger.info("%s: %d units, written to %s", plan.name, len(plan.units), store)
    with _where_shards_run(naming, dask_address, n_workers) as where:
        result = run_build(plan, store, progress=ArtifactProgress(artifact_key(plan.name, "progress")), show_bar=False,
                           overwrite=overwrite, **where)
    summary = summarize_build(result)
    if _in_flow_run():
        create_markdown_artifact(build_summary_markdown(summary), key=artifact_key(plan.name),
                                 description=f"{plan.name} build: summary and drop report")
    logger.info("store %s: %s", result.store, summary["counts"])
    if summary.get("incomplete_shards"):
        raise RuntimeError(f"{len(summary['incomplete_shards'])} shards were not written; run the deployment again to complete them")
    return summary


# -- the flows: one per recipe of pipelines.recipes.registry ----------------------------------------------------

Param = tuple[str, Any, Any, str]  # name, type, default (REQUIRED: none), description
REQUIRED = inspect.Parameter.empty
STORE: Param = ("store", str, REQUIRED, "Folder of the feature store to write or complete (absolute path on the "
                "serving machine).")
COLLAPSE: list[Param] = [
    ("mode", Mode, "weighted", "How a word's frames collapse to one vector: mean, weighted (by overlap), max or std."),
    ("keep_frames", bool, False, "Also write the frame-level tables (large)."),
]
WHERE: list[Param] = [
    ("dask_address", str | None, None, "An existing Dask scheduler (tcp://host:8786); empty: a local cluster on the "
     "serving machine."),
    ("n_workers", int | None, None, "Worker processes of the local cluster (empty: one per core, fewer if memory is "
     "short; 0: inline, no Dask)."),
]
OVERWRITE: Param = ("overwrite", bool, False, "Replace a store of another recipe or configuration at `store`.")


def flow_parameters(recipe: Recipe) -> list[Param]:
    """The flow's parameters: the recipe's required options, the store, its other options, then the settings
    every build shares."""
    specs = recipe.option_specs()
    own = [(o.name, o.type, REQUIRED if o.required else o.default, o.flow_help) for o in specs]
    shard = ("units_per_shard", int, recipe.units_per_shard,
             f"{recipe.unit_help[0].upper()}{recipe.unit_help[1:]} per shard (one task run and one Parquet file per "
             "table each).")
    return ([p for p in own if p[2] is REQUIRED] + [STORE] + [p for p in own if p[2] is not REQUIRED]
            + (COLLAPSE if recipe.collapse else []) + WHERE + [shard, OVERWRITE])


def flow_docstring(recipe: Recipe, params: Sequence[Param]) -> str:
    """The recipe's help, then `Args:` (Prefect shows each as its parameter's description)."""
    args = [textwrap.fill(f"{name}: {text}", 110, initial_indent="    ", subsequent_indent="        ")
            for name, _, _, text in params]
    return "\n".join([recipe.help[0].upper() + recipe.help[1:] + ".", "", "Args:", *args]) + "\n"


def run_recipe(recipe: Recipe, p: dict[str, Any]) -> dict[str, Any]:
    """A recipe flow's body: its plan from the parameters, carried out by `run_build_plan`."""
    _warn_relative(store=p["store"], **{o.name: p[o.name] for o in recipe.option_specs() if o.path})
    config = build_config(p.get("mode", "weighted"), keep_frames=p.get("keep_frames", False),
                          units_per_shard=p["units_per_shard"])
    plan = recipe.build_plan(p, config)
    naming = ShardNaming(recipe.shard_noun, recipe.shard_count_at)
    return run_build_plan(plan, p["store"], naming, p["dask_address"], p["n_workers"], p["overwrite"])


def recipe_flow(recipe: Recipe) -> Flow[..., dict[str, Any]]:
    """The Prefect flow of a recipe: a function with the parameters' signature and docstring (Prefect builds the
    run form from them), named as prefect.yaml's entrypoint names it."""
    params = flow_parameters(recipe)
    signature = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d,
                                                     annotation=t) for n, t, d, _ in params],
                                  return_annotation=dict[str, Any])

    def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return run_recipe(recipe, dict(bound.arguments))

    run.__signature__ = signature  # type: ignore[attr-defined]
    run.__annotations__ = {n: t for n, t, _, _ in params} | {"return": dict[str, Any]}
    run.__name__ = run.__qualname__ = recipe.function
    run.__doc__ = flow_docstring(recipe, params)
    return flow(name=recipe.flow, log_prints=True)(run)


FLOWS: dict[str, Flow[..., dict[str, Any]]] = {r.function: recipe_flow(r) for r in RECIPES}
globals().update(FLOWS)  # build_mosei_features, extract_video_features, ...: prefect.yaml's entrypoints
