"""Recipe: CMU-MOSI utterance-level features of the bc-LSTM release (Poria et al., ACL 2017): what to build.

The release (read and checked by `pipelines.stages.utterance`) gives one vector per utterance. The store gets
three utterance-level sets (schema 2), the words of each transcript (untimed) in `aligned/`, continuous labels joined from CMU-MOSI's `label.csv`, and the release's binary label
as `sentiment_class` (negative / positive).

Splits: the release's own speaker-independent split (62 / 31 videos), NOT the standard folds: its text and video
extractors were trained on its training videos, so scoring on the standard folds leaks labels. `valid` is carved
from the training VIDEOS (seeded, ~10%); it is contaminated like the training set (the extractors saw it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import FeatureSet, labels_record

from ..build import run_build
from ..errors import PipelineError
from ..records import WorkUnit
from ..stages.utterance import (
    SETS,
    UtteranceOptions,
    UtteranceRows,
    process_utterance_unit,
    read_release,
    release_stamp,
)
from ..store_writer import BuildConfig, BuildPlan, BuildResult
from .base import Recipe, option

RECIPE_VERSION = "mosi-utterance/1"
CITATION = "Poria et al., Context-Dependent Sentiment Analysis in User-Generated Videos, ACL 2017"
CONTAMINATED = ("contaminated: the release's text and video extractors were trained on its training videos, these "
                "valid videos included, so valid scores are optimistic and not fit for model selection")


def valid_videos(train_videos: list[str], fraction: float = 0.1, seed: int = 0) -> list[str]:
    """~`fraction` of the training videos (at least one), drawn with `seed` from the sorted ids: the same on
    every machine and run."""
    videos = sorted(set(train_videos))
    n = max(1, round(fraction * len(videos))) if fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(videos))
    return sorted(videos[i] for i in order[:n])


def feature_sets(dims: dict[str, int]) -> list[FeatureSet]:
    return [
        FeatureSet(
            name=name, dims=tuple(f"{SETS[name][0]}_{j:03d}" for j in range(dim)), modality=SETS[name][1],
            extractor="bc-lstm-release", extractor_version="948cf07c",
            config={"file": f"{SETS[name][0]}_{{train,test}}0.csv", "citation": CITATION},
            description=SETS[name][2], level="utterance",
        )
        for name, dim in dims.items()
    ]


def plan_mosi_utterance(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    config: BuildConfig | None = None,
) -> BuildPlan:
    """Units (one per video), feature sets and the split report, for `pipelines.build.run_build` or a Prefect flow."""
    root = Path(root).resolve()
    label_path = (Path(labels) if labels is not None else root.parent / "label.csv").resolve()
    release = read_release(root, label_path)
    if not release.rows:
        raise PipelineError(f"{root}: no usable segment in the release ({len(release.failures)} rows failed)", stage="read")
    train_videos = [r["video_id"] for r in release.rows if r["release_split"] == "train"]
    valid = set(valid_videos(train_videos, valid_fraction, seed))
    by_video: dict[str, list[dict[str, Any]]] = {}
    for r in release.rows:
        split = "test" if r["release_split"] == "test" else ("valid" if r["video_id"] in valid else "train")
        by_video.setdefault(r["video_id"], []).append({**r, "split": split})
    stamp = release_stamp(root, label_path)
    units = []
    for vid, rows in sorted(by_video.items()):
        rows.sort(key=lambda x: x["segment_id"])
        h = hashlib.sha256()
        for r in rows:  # the unit's key covers its values, labels and split
            h.update(json.dumps({k: v for k, v in r.items() if k != "vectors"}, sort_keys=True).encode())
            for name in sorted(r["vectors"]):
                h.update(r["vectors"][name].tobytes())
        payload = UtteranceRows(tuple((r["segment_id"], r["split"]) for r in rows), str(root))
        units.append(WorkUnit(vid, h.hexdigest(), payload))
    if release.failures:  # rows the release got wrong go to the store's failures table like any other
        failed = [vars(f) for f in release.failures]
        key = hashlib.sha256(json.dumps(failed, sort_keys=True).encode()).hexdigest()
        units.append(WorkUnit("~release-rows", key, UtteranceRows((), str(root), tuple(release.failures))))
    n_missing = sum(1 for r in release.rows if r["sentiment"] is None or (isinstance(r["sentiment"], float) and math.isnan(r["sentiment"])))
    report = {
        "split": {"scheme": "bc-LSTM release (speaker-independent, 62/31 videos); valid = seeded share of the training videos",
                  "valid_videos": sorted(valid), "valid_fraction": valid_fraction, "seed": seed,
                  "contamination": "the release's text and video extractors were trained on its training videos, "
                                   "valid included: select on valid at your own risk; report fixed-epoch results too"},
        "release_rows": len(release.rows) + len(release.failures),
        "rows_failed": len(release.failures),
        "without_continuous_label": n_missing,
        "failed_rows": [vars(f) for f in release.failures[:20]],
    }
    build_info = {"recipe": RECIPE_VERSION, "input": str(root), "labels_file": str(label_path),
                  "labels": labels_record(),  # sentiment only: no emotion classes
                  "valid_fraction": valid_fraction, "seed": seed, "sets": list(SETS),
                  "split_use": {"valid": {"select": False, "why": CONTAMINATED}}}  # manifest split_use (training reads it)
    return BuildPlan("cmu-mosi-utterance", units, process_utterance_unit, feature_sets(release.dims), config or BuildConfig(),
                     build_info, report, UtteranceOptions(str(root), str(label_path), stamp))


def build_mosi_utterance(
    root: str | os.PathLike,
    store: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    config: BuildConfig | None = None,
    executor: Any = None,
    progress: bool = True,
) -> BuildResult:
    """Build a store from the release's folder; returns the store writer's `BuildResult`."""
    plan = plan_mosi_utterance(root, labels, valid_fraction, seed, config)
    return run_build(plan, store, executor=executor, show_bar=progress)


# --- as the command line and the flows offer it -------------------------------------------------------------

@dataclass(frozen=True)
class UtteranceRecipeOptions:
    input: str = option(help="the release's folder (transcripts.csv, text_train.csv, audio_train0.csv, ...)", path=True,
                        flow_help="Folder of the bc-LSTM release (text/audio/video pickles), an absolute path on the "
                                  "serving machine.")
    labels: str | None = option(None, "CMU-MOSI label.csv for continuous labels (default: ../label.csv)", path=True,
                                flow_help="The label CSV; empty: label.csv next to the release folder.")
    valid_fraction: float = option(0.1, "share of the training videos held out as valid", check="fraction")
    seed: int = option(0, "seed of the validation videos' draw", check="seed")


def plan_utterance_recipe(options: UtteranceRecipeOptions, config: BuildConfig) -> BuildPlan:
    return plan_mosi_utterance(options.input, labels=options.labels, valid_fraction=options.valid_fraction,
                               seed=options.seed, config=config)


RECIPE = Recipe("mosi-utterance", "CMU-MOSI utterance-level features of the bc-LSTM release (schema 2)",
                UtteranceRecipeOptions, plan_utterance_recipe, flow="build-mosi-utterance",
                function="build_mosi_utterance", unit_help="work units (a video's utterances)", collapse=False)
