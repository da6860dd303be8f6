"""Prefect flows that build feature stores: CMU-MOSEI / CMU-MOSI from the SDK release, raw videos, MMSA pickles and
the MOSI utterance release.

Each flow plans the build with its recipe and hands the plan to the one build driver (`pipelines.build.run_build`),
passing the Prefect-backed pieces: `PrefectShards` makes one task run per shard (named after what it holds, with
retries, on Dask or inline), `ArtifactProgress` keeps a progress artifact up to date as shards finish; at the end
a markdown artifact shows the build summary with its drop report. All the work is in `pipelines`; nothing there
knows Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.futures import as_completed

from flows.dask_cluster import dask_client, local_dask_config, task_runner
from flows.options import build_config, video_config
from flows.summary import build_summary_markdown, summarize_build
from pipelines.build import BuildProgress, WriteShard, run_build, shard_title
from pipelines.collapse import Mode
from pipelines.extract.registry import default as extractor_default
from pipelines.recipes.mmsa import MMSA_UNITS_PER_SHARD
from pipelines.recipes.videos import VIDEO_UNITS_PER_SHARD
from pipelines.store_writer import BuildPlan, Shard, ShardRecord

DEFAULT_FACE = extractor_default("face")  # the registry's default backend

F = TypeVar("F", bound=Callable[..., Any])
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


SDK_SHARDS = ShardNaming("videos", ("videos",))  # one unit: `batch_videos` videos
VIDEO_SHARDS = ShardNaming("videos")  # one unit: a media file and its segments (or a batch of text-only segments)
MMSA_SHARDS = ShardNaming("segments", ("data", "id"))  # one unit: a run of pickle rows
UTTERANCE_SHARDS = ShardNaming("videos")  # one unit: a video's utterances


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


# -- the flows --------------------------------------------------------------------------------------------------

def _sdk_flow(dataset: str, csd_dir: str, store: str, sets: list[str] | None, mode: Mode, keep_frames: bool,
              dask_address: str | None, n_workers: int | None, batch_videos: int, units_per_shard: int,
              overwrite: bool = False) -> dict[str, Any]:
    from pipelines.recipes.sdk import plan_sdk

    _warn_relative(csd_dir=csd_dir, store=store)
    config = build_config(mode, keep_frames=keep_frames, units_per_shard=units_per_shard)
    plan = plan_sdk(csd_dir, dataset=dataset, sets=sets, config=config, batch_videos=batch_videos)
    return run_build_plan(plan, store, SDK_SHARDS, dask_address, n_workers, overwrite)


# Prefect reads each flow's parameter descriptions from its own docstring: the two SDK flows share this one.
_SDK_DOC = """{title} `.csd` computational sequences -> word-aligned Parquet store.

Args:
    csd_dir: Folder of the release's `.csd` files (labels, words, feature sequences), an absolute path on the
        machine serving this flow, or a folder URL (s3://bucket/{folder}; read by byte ranges on the workers).
    store: Folder of the feature store to write or complete (absolute path on the serving machine).
    sets: Feature sequences to import by role (e.g. covarep, {facet}, glove); empty: every one found.
    mode: How a word's frames collapse to one vector: mean, weighted (by overlap), max or std.
    keep_frames: Also write the frame-level tables (large).
    dask_address: An existing Dask scheduler (tcp://host:8786); empty: a local cluster on the serving machine.
    n_workers: Worker processes of the local cluster (empty: one per core, fewer if memory is short; 0: inline,
        no Dask).
    batch_videos: Videos per work unit.
    units_per_shard: Work units per shard (one task run and one Parquet file per table each).
    overwrite: Replace a store of another recipe or configuration at `store`.
"""


def _documented(doc: str) -> Callable[[F], F]:
    def apply(fn: F) -> F:
        fn.__doc__ = doc
        return fn

    return apply


@flow(name="build-mosei-features", log_prints=True)
@_documented(_SDK_DOC.format(title="CMU-MOSEI", folder="CMU_MOSEI", facet="facet42"))
def build_mosei_features(
    csd_dir: str,
    store: str,
    sets: list[str] | None = None,
    mode: Mode = "weighted",
    keep_frames: bool = False,
    dask_address: str | None = None,
    n_workers: int | None = None,
    batch_videos: int = 4,
    units_per_shard: int = 16,
    overwrite: bool = False,
) -> dict[str, Any]:
    return _sdk_flow("mosei", csd_dir, store, sets, mode, keep_frames, dask_address, n_workers, batch_videos, units_per_shard,
                     overwrite)


@flow(name="build-mosi-features", log_prints=True)
@_documented(_SDK_DOC.format(title="CMU-MOSI", folder="CMU_MOSI", facet="facet41"))
def build_mosi_features(
    csd_dir: str,
    store: str,
    sets: list[str] | None = None,
    mode: Mode = "weighted",
    keep_frames: bool = False,
    dask_address: str | None = None,
    n_workers: int | None = None,
    batch_videos: int = 4,
    units_per_shard: int = 16,
    overwrite: bool = False,
) -> dict[str, Any]:
    return _sdk_flow("mosi", csd_dir, store, sets, mode, keep_frames, dask_address, n_workers, batch_videos, units_per_shard,
                     overwrite)


@flow(name="extract-video-features", log_prints=True)
def extract_video_features(
    input: str,
    store: str,
    face: str | None = DEFAULT_FACE,
    fps: float | None = None,
    mode: Mode = "weighted",
    keep_frames: bool = False,
    split: str | None = None,
    dask_address: str | None = None,
    n_workers: int | None = None,
    units_per_shard: int = VIDEO_UNITS_PER_SHARD,
    overwrite: bool = False,
    emotion_classes: str | None = None,
) -> dict[str, Any]:
    """Raw videos (MMSA-FET folder, manifest CSV/JSONL, or one video) -> the same store as the SDK importer.

    Args:
        input: An MMSA-FET folder, a manifest (CSV/JSONL with video_path, transcript, labels, split) or one video
            file; an absolute path on the machine serving this flow, or a URL (s3://bucket/manifest.csv).
        store: Folder of the feature store to write or complete (absolute path on the serving machine).
        face: Face backend by name (`mmolre extractors` lists them) or none.
        fps: Face frames sampled per second; empty: 5.
        mode: How a word's frames collapse to one vector: mean, weighted (by overlap), max or std.
        keep_frames: Also write the frame-level tables (large).
        split: The split of a single video or a MELD file, or a manifest's default split.
        dask_address: An existing Dask scheduler (tcp://host:8786); empty: a local cluster on the serving machine.
        n_workers: Worker processes of the local cluster (empty: one per core, fewer if memory is short; 0: inline,
            no Dask).
        units_per_shard: Videos per shard (one task run each).
        overwrite: Replace a store of another recipe or configuration at `store`.
        emotion_classes: meld, cremad, ravdess, iemocap or comma-separated class names; empty: found from the labels.
    """
    from pipelines.recipes.videos import plan_videos

    _warn_relative(input=input, store=store)
    config = build_config(mode, keep_frames=keep_frames, units_per_shard=units_per_shard)
    plan = plan_videos(input, video_config(face=face, fps=fps), config, split=split, emotion_classes=emotion_classes)
    return run_build_plan(plan, store, VIDEO_SHARDS, dask_address, n_workers, overwrite)


@flow(name="build-mmsa-features", log_prints=True)
def build_mmsa_features(
    input: str,
    store: str,
    aligned: bool | None = None,
    text_name: str | None = None,
    audio_name: str | None = None,
    vision_name: str | None = None,
    mode: Mode = "weighted",
    keep_frames: bool = False,
    dask_address: str | None = None,
    n_workers: int | None = None,
    units_per_shard: int = MMSA_UNITS_PER_SHARD,
    overwrite: bool = False,
) -> dict[str, Any]:
    """An MMSA pickle (aligned_50.pkl / unaligned_50.pkl), read without running its code -> feature store.

    Args:
        input: The MMSA pickle file, an absolute path on the machine serving this flow.
        store: Folder of the feature store to write or complete (absolute path on the serving machine).
        aligned: Whether the pickle's sequences are word-aligned; empty: from the pickle (or its file name).
        text_name: Feature set name for the text features (e.g. bert); empty: the pickle's own or one from its dimension.
        audio_name: Feature set name for the audio features (e.g. covarep); empty: the pickle's own or one from its dimension.
        vision_name: Feature set name for the vision features (e.g. facet41); empty: the pickle's own or one from its dimension.
        mode: How a word's frames collapse to one vector: mean, weighted (by overlap), max or std.
        keep_frames: Also write the frame-level tables (large).
        dask_address: An existing Dask scheduler (tcp://host:8786); empty: a local cluster on the serving machine.
        n_workers: Worker processes of the local cluster (empty: one per core, fewer if memory is short; 0: inline,
            no Dask).
        units_per_shard: Work units (runs of pickle rows) per shard.
        overwrite: Replace a store of another recipe or configuration at `store`.
    """
    from pipelines.recipes.mmsa import plan_mmsa

    _warn_relative(input=input, store=store)
    names = {m: n for m, n in (("text", text_name), ("audio", audio_name), ("vision", vision_name)) if n}
    config = build_config(mode, keep_frames=keep_frames, units_per_shard=units_per_shard)
    plan = plan_mmsa(input, config, names=names, aligned=aligned)
    return run_build_plan(plan, store, MMSA_SHARDS, dask_address, n_workers, overwrite)


@flow(name="build-mosi-utterance", log_prints=True)
def build_mosi_utterance(
    input: str,
    store: str,
    labels: str | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    dask_address: str | None = None,
    n_workers: int | None = None,
    units_per_shard: int = 16,
    overwrite: bool = False,
) -> dict[str, Any]:
    """CMU-MOSI utterance-level features of the bc-LSTM release -> store with utterance-level sets (schema 2).

    Args:
        input: Folder of the bc-LSTM release (text/audio/video pickles), an absolute path on the serving machine.
        store: Folder of the feature store to write or complete (absolute path on the serving machine).
        labels: The label CSV; empty: label.csv next to the release folder.
        valid_fraction: Share of the training videos held out as the valid split.
        seed: Seed of the valid split's draw.
        dask_address: An existing Dask scheduler (tcp://host:8786); empty: a local cluster on the serving machine.
        n_workers: Worker processes of the local cluster (empty: one per core, fewer if memory is short; 0: inline,
            no Dask).
        units_per_shard: Videos per shard (one task run each).
        overwrite: Replace a store of another recipe or configuration at `store`.
    """
    from pipelines.recipes.mosi_utterance import plan_mosi_utterance

    _warn_relative(input=input, store=store, labels=labels)
    config = build_config(units_per_shard=units_per_shard)
    plan = plan_mosi_utterance(input, labels=labels, valid_fraction=valid_fraction, seed=seed, config=config)
    return run_build_plan(plan, store, UTTERANCE_SHARDS, dask_address, n_workers, overwrite)
