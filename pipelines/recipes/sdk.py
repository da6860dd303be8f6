"""Recipe: CMU-MOSEI / CMU-MOSI from the SDK's computational sequences (.csd): what to build.

Segments are the label intervals of the labelled videos in a fold; splits are the standard folds, by video id.
A unit is a batch of videos (`stages.csd.CsdVideos`); the stage (`pipelines.stages.csd`) reads their rows.
Planning reads only the files' entry lists and shapes and reports the release's known faults: ids missing from
a sequence, labelled videos in no fold, fold ids without labels.

`csd_dir` may be a folder URL (`s3://bucket/CMU_MOSEI`): the .csd files are found by listing it, planning reads
their entry lists by byte ranges, and each unit's worker opens the objects itself (pipelines/csd.py). A unit's
input key then names each object by its URL, size and ETag from the listing instead of its path, size and
mtime; local folders keep exactly the keys they always had.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feature_schemas import FeatureSet, labels_record
from feature_schemas.storage import display, is_url, local_input_key, refuse_url_credentials

from ..build import run_build
from ..collapse import CollapseConfig
from ..csd import FEATURE_ROLES, ROLES, CsdFile, CsdInfo, discover
from ..errors import PipelineError
from ..folds import DATASETS, resolve_folds, split_of, video_id_of
from ..records import WorkUnit
from ..stages.csd import CsdOptions, CsdVideo, CsdVideos, process_csd_unit
from ..store_writer import BuildConfig, BuildPlan, BuildResult
from .base import Recipe, option

RECIPE_VERSION = "sdk/1"


@dataclass(frozen=True)
class SdkInputs:
    """What `sdk_units` found: the recognised files by role and the feature sets it will build."""

    dataset: str
    files: dict[str, CsdInfo]
    sets: tuple[str, ...]
    ignored: tuple[str, ...]


def feature_set_of(info: CsdInfo, dataset: str) -> FeatureSet:
    """The store's description of one standard sequence (dimension names from the file, else published ones)."""
    role = ROLES[info.role]
    meta = info.metadata
    return FeatureSet(
        name=info.role,
        dims=info.dims,
        modality=role.modality or "audio",
        extractor=role.extractor,
        extractor_version=str(meta.get("computational sequence version", "")),
        config={
            "source": f"CMU-{dataset.upper()} SDK release",
            "file": info.name,
            "root name": info.root_name,
            "featureset bib citation": str(meta.get("featureset bib citation", "")),
            "level": "word" if info.role == "glove" else "frame",
        },
        frame_rate=role.frame_rate,
        description=str(meta.get("computational sequence description", "")) or f"{role.extractor} from the CMU-{dataset.upper()} SDK release",
    )


def find_inputs(csd_dir: str | os.PathLike, dataset: str = "mosei", sets: Sequence[str] | None = None) -> SdkInputs:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, not {dataset!r}")
    if is_url(csd_dir):
        csd_dir = _where(csd_dir)
    files, ignored = discover(csd_dir)
    if "labels" not in files:
        raise PipelineError(f"{csd_dir}: no label sequence (All Labels / Opinion Labels .csd); segments come from labels",
                            "read", source_path=str(csd_dir))
    available = [r for r in FEATURE_ROLES if r in files]
    if sets is None:
        chosen = available
    else:
        missing = [s for s in sets if s not in files or s not in FEATURE_ROLES]
        if missing:
            raise PipelineError(f"{csd_dir}: no .csd for feature sets {missing} (found: {', '.join(available) or 'none'})",
                                "read", source_path=str(csd_dir))
        chosen = list(dict.fromkeys(sets))
    return SdkInputs(dataset, files, tuple(chosen), tuple(ignored))


def _file_key(info: CsdInfo) -> list[Any]:
    """What decides whether a unit must be rebuilt: [path, size, mtime] of a local file (os.stat), [URL, size,
    ETag] of an object at a URL (from the listing, no request per file)."""
    if info.source is not None:
        return info.source.key()
    return local_input_key(info.path)


def _where(csd_dir: str | os.PathLike) -> str:
    """The input folder as the build records it: a local folder resolved, a URL as given (no credentials)."""
    if is_url(csd_dir):
        try:
            refuse_url_credentials(str(csd_dir))
        except ValueError as e:
            raise PipelineError(str(e), "read", source_path=display(csd_dir)) from None
        return str(csd_dir).rstrip("/")
    return str(Path(csd_dir).resolve())


def sdk_units(
    csd_dir: str | os.PathLike,
    dataset: str = "mosei",
    sets: Sequence[str] | None = None,
    batch_videos: int = 4,
    folds: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
) -> tuple[list[WorkUnit], CsdOptions, list[FeatureSet], dict[str, Any]]:
    """Plan a build: one unit per `batch_videos` labelled videos in a fold, what the units share (the stage's
    options), the feature sets, and the drop report.

    Reads only the files' entry lists and shapes, never their data."""
    inputs = find_inputs(csd_dir, dataset, sets)
    fold_ids = resolve_folds(folds, dataset)
    split = split_of(fold_ids)
    with CsdFile(inputs.files["labels"].path) as lab:
        label_keys = sorted(lab.ids())
        n_label_segments = sum(lab.shape(k)[0] for k in label_keys)
    labelled_videos = sorted({video_id_of(k) for k in label_keys})
    in_fold = [v for v in labelled_videos if v in split]
    no_fold = sorted(set(labelled_videos) - set(split))
    fold_without_labels = {s: sorted(set(ids) - set(labelled_videos)) for s, ids in fold_ids.items()}

    roles = ["words"] + list(inputs.sets) if "words" in inputs.files else list(inputs.sets)
    missing: dict[str, list[str]] = {}
    for role in roles:
        with CsdFile(inputs.files[role].path) as f:
            present = set(f.ids())
        missing[role] = sorted(v for v in in_fold if v not in present)
    if "words" not in inputs.files:
        missing["words"] = list(in_fold)

    keys_by_video: dict[str, list[str]] = {}
    for k in label_keys:
        vid = video_id_of(k)
        if vid in split:
            keys_by_video.setdefault(vid, []).append(k)

    file_roles = ["labels"] + roles
    files = {r: str(inputs.files[r].path) for r in file_roles}
    dims = {r: inputs.files[r].dim for r in inputs.sets}
    file_keys = {r: _file_key(inputs.files[r]) for r in file_roles}
    units = []
    step = max(1, int(batch_videos))
    for i in range(0, len(in_fold), step):
        vids = in_fold[i : i + step]
        videos = {v: {"split": split[v], "label_keys": keys_by_video[v]} for v in vids}
        keyed = {"dataset": dataset, "files": files, "sets": list(inputs.sets), "dims": dims, "videos": videos}
        key = hashlib.sha256(
            json.dumps({"recipe": RECIPE_VERSION, "files": file_keys, "payload": keyed}, sort_keys=True).encode()
        ).hexdigest()
        payload = CsdVideos({v: CsdVideo(split[v], tuple(keys_by_video[v])) for v in vids})
        units.append(WorkUnit(f"{dataset}-{i // step:05d}-{vids[0]}", key, payload))
    sources = {r: inputs.files[r].source for r in file_roles}
    versions = {r: s.version for r, s in sources.items() if s is not None} or None
    options = CsdOptions(dataset, files, tuple(inputs.sets), dims, versions)

    feature_sets = [feature_set_of(inputs.files[r], dataset) for r in inputs.sets]
    report: dict[str, Any] = {
        "recipe": RECIPE_VERSION,
        "dataset": dataset,
        "files": {r: inputs.files[r].name for r in sorted(inputs.files)},
        "ignored_files": list(inputs.ignored),
        "labelled_videos": len(labelled_videos),
        "labelled_segments": n_label_segments,
        "videos_in_folds": len(in_fold),
        "labelled_videos_in_no_fold": no_fold,
        "n_labelled_videos_in_no_fold": len(no_fold),
        "fold_ids_without_labels": fold_without_labels,
        "n_fold_ids_without_labels": {s: len(v) for s, v in fold_without_labels.items()},
        "ids_missing": missing,
        "n_ids_missing": {r: len(v) for r, v in missing.items()},
    }
    return units, options, feature_sets, report


# -- the whole build -------------------------------------------------------------------------------
def plan_sdk(
    csd_dir: str | os.PathLike,
    dataset: str = "mosei",
    sets: Sequence[str] | None = None,
    config: BuildConfig | None = None,
    folds: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
    batch_videos: int = 4,
) -> BuildPlan:
    """Everything decided before work runs: units, feature sets, drop report; for `pipelines.build.run_build` or a Prefect flow."""
    units, options, feature_sets, report = sdk_units(csd_dir, dataset, sets, batch_videos=batch_videos, folds=folds)
    build_info = {
        "recipe": RECIPE_VERSION,
        "dataset": dataset,
        "csd_dir": _where(csd_dir),
        "sets": [fs.name for fs in feature_sets],
        "folds": "standard" if folds is None else (str(folds) if isinstance(folds, (str, os.PathLike)) else "given"),
        "batch_videos": batch_videos,
        "labels": labels_record(),  # MOSEI's presence emotions as given (0 = absent); no single-label classes
    }
    return BuildPlan(f"cmu-{dataset}", units, process_csd_unit, feature_sets, config or BuildConfig(), build_info, report, options)


def build_sdk(
    csd_dir: str | os.PathLike,
    store: str | os.PathLike,
    dataset: str = "mosei",
    sets: Sequence[str] | None = None,
    mode: str = "weighted",
    keep_frames: bool = False,
    executor: Any = None,
    folds: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
    batch_videos: int = 4,
    units_per_shard: int = 16,
    progress: bool = True,
) -> BuildResult:
    """Build a store from a folder of CMU-MOSEI/MOSI .csd files; returns the store writer's `BuildResult`."""
    config = BuildConfig(collapse=CollapseConfig(mode=mode), keep_frames=keep_frames, units_per_shard=units_per_shard)
    plan = plan_sdk(csd_dir, dataset, sets, config, folds=folds, batch_videos=batch_videos)
    return run_build(plan, store, executor=executor, show_bar=progress)


# --- as the command line and the flows offer it -------------------------------------------------------------

@dataclass(frozen=True)
class SdkRecipeOptions:
    csd_dir: str = option(help="folder of .csd computational sequences", path=True,
                          flow_help="Folder of the release's `.csd` files (labels, words, feature sequences), an "
                                    "absolute path on the machine serving this flow, or a folder URL "
                                    "(s3://bucket/folder; read by byte ranges on the workers).")
    sets: list[str] | None = option(None, "feature sets to include (default: all found)",
                                    flow_help="Feature sequences to import by role (e.g. covarep, facet42, glove); "
                                              "empty: every one found.")
    batch_videos: int = option(4, "videos per work unit", flow_help="Videos per work unit.", check="count")


def plan_mosei_sdk(options: SdkRecipeOptions, config: BuildConfig) -> BuildPlan:
    return plan_sdk(options.csd_dir, "mosei", options.sets, config, batch_videos=options.batch_videos)


def plan_mosi_sdk(options: SdkRecipeOptions, config: BuildConfig) -> BuildPlan:
    return plan_sdk(options.csd_dir, "mosi", options.sets, config, batch_videos=options.batch_videos)


_SDK = {"options": SdkRecipeOptions, "unit_help": "work units (batches of videos)", "shard_count_at": ("videos",)}
MOSEI = Recipe("mosei", "CMU-MOSEI from the SDK's .csd files", plan=plan_mosei_sdk, flow="build-mosei-features",
               function="build_mosei_features", **_SDK)
MOSI = Recipe("mosi", "CMU-MOSI from the SDK's .csd files", plan=plan_mosi_sdk, flow="build-mosi-features",
              function="build_mosi_features", **_SDK)
