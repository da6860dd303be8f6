"""Prefect flows that build feature stores: CMU-MOSEI / CMU-MOSI from the SDK release, and raw videos.

Each reads like the process it runs: plan the units, write the shards on Dask (one task per shard, with
retries), write the manifest, publish a summary. All the work is in `pipelines`; nothing there knows Prefect.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError

from flows.dask_cluster import local_dask_config, task_runner
from flows.options import build_config, video_config
from flows.summary import build_summary_markdown, summarize_build
from pipelines.build import Stage
from pipelines.collapse import Mode
from pipelines.recipes.videos import VIDEO_UNITS_PER_SHARD
from pipelines.store_writer import (
    BuildConfig,
    BuildPlan,
    BuildResult,
    Shard,
    ShardRecord,
    open_build,
    write_shard,
)


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE, task_run_name="write shard {shard.shard_id}")
def write_shard_task(shard: Shard, store: str, process: Any, feature_sets: list, config: BuildConfig) -> ShardRecord:
    return write_shard(shard, store, process, feature_sets, config)


@flow(name="write-shards", validate_parameters=False)
def write_shards(shards: list[Shard], store: str, process: Any, feature_sets: list, config: BuildConfig) -> list[ShardRecord]:
    """Fan the shards out over the Dask cluster; a shard that fails past its retries is left for the next run."""
    logger = get_run_logger()  # prefect-dask logs the Dask dashboard's address when the cluster starts
    futures = write_shard_task.map(shards, unmapped(store), unmapped(process), unmapped(feature_sets), unmapped(config))
    records = []
    for fut in futures:
        state = fut.wait() or fut.state
        if fut.state.is_completed():
            rec = fut.result()
            records.append(rec)
            logger.info("shard %s: %d segments, %d failures", rec.shard_id, rec.n_segments, rec.n_failures)
        else:
            logger.error("shard task failed after its retries: %s", state)
    return records


def _logger() -> Any:
    """The flow run's logger; a plain logger when the flow's function is called directly (`flow.fn(...)`)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def run_build_plan(plan: BuildPlan, store: str, dask_address: str | None, n_workers: int | None,
                   overwrite: bool = False) -> dict[str, Any]:
    """Open the build, write the missing shards on Dask (inline with n_workers=0), finish the manifest, publish
    a summary artifact (inside a flow run)."""
    logger = _logger()
    stage = Stage(plan.stage, plan.options)  # until this loop moves into pipelines.build.run_build
    build = open_build(store, plan.name, plan.units, plan.feature_sets, plan.config, plan.build_info, overwrite=overwrite)
    logger.info("%s: %d units in %d shards, %d already written", plan.name, len(plan.units), len(build.shards), build.skipped)
    try:
        records: list[ShardRecord] = []
        if build.todo and n_workers == 0:
            records = [write_shard(s, str(build.root), stage, build.feature_sets, build.config) for s in build.todo]
        elif build.todo:
            runner = task_runner(dask_address, n_workers)
            with local_dask_config(dask_address):  # workers that exit at once when the flow closes the cluster
                records = write_shards.with_options(task_runner=runner)(
                    build.todo, str(build.root), stage, build.feature_sets, build.config
                )
    except BaseException:
        build.close()
        raise
    result: BuildResult = build.finish(records, plan.report)
    summary = summarize_build(result)
    if FlowRunContext.get() is not None:
        create_markdown_artifact(build_summary_markdown(summary), key=_artifact_key(plan.name), description=f"{plan.name} build")
    logger.info("store %s: %s", result.store, summary["counts"])
    if summary.get("incomplete_shards"):
        raise RuntimeError(f"{len(summary['incomplete_shards'])} shards were not written; run the deployment again to complete them")
    return summary


def _artifact_key(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") + "-build"


def _sdk_flow(dataset: str, csd_dir: str, store: str, sets: list[str] | None, mode: Mode, keep_frames: bool,
              dask_address: str | None, n_workers: int | None, batch_videos: int, units_per_shard: int,
              overwrite: bool = False) -> dict[str, Any]:
    from pipelines.recipes.sdk import plan_sdk

    config = build_config(mode, keep_frames=keep_frames, units_per_shard=units_per_shard)
    plan = plan_sdk(csd_dir, dataset=dataset, sets=sets, config=config, batch_videos=batch_videos)
    return run_build_plan(plan, store, dask_address, n_workers, overwrite)


@flow(name="build-mosei-features", log_prints=True)
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
    """CMU-MOSEI `.csd` computational sequences -> word-aligned Parquet store (`overwrite`: replace a store of
    another recipe or configuration at `store`)."""
    return _sdk_flow("mosei", csd_dir, store, sets, mode, keep_frames, dask_address, n_workers, batch_videos, units_per_shard,
                     overwrite)


@flow(name="build-mosi-features", log_prints=True)
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
    """CMU-MOSI `.csd` computational sequences -> word-aligned Parquet store (`overwrite`: as for MOSEI)."""
    return _sdk_flow("mosi", csd_dir, store, sets, mode, keep_frames, dask_address, n_workers, batch_videos, units_per_shard,
                     overwrite)


@flow(name="extract-video-features", log_prints=True)
def extract_video_features(
    input: str,
    store: str,
    face: str | None = "mediapipe",
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
    `emotion_classes`: meld, cremad, ravdess, iemocap or comma-separated names (None: found from the labels)."""
    from pipelines.recipes.videos import plan_videos

    config = build_config(mode, keep_frames=keep_frames, units_per_shard=units_per_shard)
    plan = plan_videos(input, video_config(face=face, fps=fps), config, split=split, emotion_classes=emotion_classes)
    return run_build_plan(plan, store, dask_address, n_workers, overwrite)


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
    units_per_shard: int = 4,
    overwrite: bool = False,
) -> dict[str, Any]:
    """An MMSA pickle (aligned_50.pkl / unaligned_50.pkl), read without running its code -> feature store."""
    from pipelines.recipes.mmsa import plan_mmsa

    names = {m: n for m, n in (("text", text_name), ("audio", audio_name), ("vision", vision_name)) if n}
    config = build_config(mode, keep_frames=keep_frames, units_per_shard=units_per_shard)
    plan = plan_mmsa(input, config, names=names, aligned=aligned)
    return run_build_plan(plan, store, dask_address, n_workers, overwrite)


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
    """CMU-MOSI utterance-level features of the bc-LSTM release -> store with utterance-level sets (schema 2)."""
    from pipelines.recipes.mosi_utterance import plan_mosi_utterance

    config = build_config(units_per_shard=units_per_shard)
    plan = plan_mosi_utterance(input, labels=labels, valid_fraction=valid_fraction, seed=seed, config=config)
    return run_build_plan(plan, store, dask_address, n_workers, overwrite)
