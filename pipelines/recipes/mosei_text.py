"""Recipe: CMU-MOSEI transcripts and sentiment labels (MMSA's `label.csv` columns without its `Raw/` clips) ->
a text-only, word-level store: the words of each transcript (untimed) and the packaged MiniLM word vectors, the
same media stage and text path as CMU-MOSI's `label.csv` (`mmolre build videos --input mosi/label.csv`).

Input: a CSV with `video_id,clip_id,text,label,mode` (e.g. shared/data/mosei/label_train_valid.csv: 18,135
segments, train and valid folds, labels in [-3, 3]).

Segment id: `<video_id>_<clip_id>` (MMSA-FET's convention, as `mmsa_fet.read_mmsa_fet` and CMU-MOSI's label.csv key their
segments). MOSEI's clip ids here are MMSA's own strings (`82_7645`), not the SDK's label-interval index, so the
SDK's `video_id[i]` cannot be derived from them; the video id is the `video_id` column.

Split: the row's `mode`; a row whose video the SDK's standard folds put in another split fails (a segment in the
wrong fold leaks its video across train and test). The shared file agrees with the standard folds on every row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..folds import split_of, standard_folds
from ..inputs import (
    ParsedInputs,
    RowError,
    SegmentSpec,
    check_id,
    check_labels,
    check_split,
    require_input,
    text_value,
)
from ..stages.media import VideoConfig
from ..store_writer import BuildConfig, BuildPlan, BuildResult
from .base import Recipe, option
from .label_table import RowId, read_label_table
from .videos import VIDEO_UNITS_PER_SHARD, plan_videos, text_set_name

NAME = "cmu-mosei-text"
COLUMNS = ("video_id", "clip_id", "text", "label", "mode")


def read_mosei_text(path: str | os.PathLike) -> ParsedInputs:
    """The label CSV as text-only segments; a row with a bad id, label or split is a failure row."""
    path = require_input(path, "MOSEI label file")
    fold = split_of(standard_folds("mosei"))

    def segment(r: dict[str, Any], rid: RowId) -> SegmentSpec:
        vid = check_id(r.get("video_id"), "video_id")
        rid.segment = check_id(f"{vid}_{check_id(r.get('clip_id'), 'clip_id')}")
        split = check_split(r.get("mode"))
        if fold.get(vid, split) != split:
            raise RowError(f"mode {split!r}, but the standard folds put video {vid} in {fold[vid]!r}")
        return SegmentSpec(rid.segment, vid, None, None, None, text_value(r.get("text")),
                           check_labels({"sentiment": r.get("label")}), split, "mosei-text", str(path))

    return read_label_table(path, COLUMNS, "mosei-text", segment)


def plan_mosei_text(input: str | os.PathLike, build_config: BuildConfig | None = None, text_model: str | None = None,
                    name: str = NAME) -> BuildPlan:
    """The media stage's text-only plan over the file's segments (options: a face-less VideoConfig; a local text
    model's set named after its folder, as the videos recipe names it)."""
    config = VideoConfig(face=None, text_model=text_model, **text_set_name(text_model))
    build_config = build_config if build_config is not None else BuildConfig(units_per_shard=VIDEO_UNITS_PER_SHARD)
    return plan_videos(read_mosei_text(input), config, build_config, name=name)


def build_mosei_text(input: str | os.PathLike, store: str | os.PathLike, build_config: BuildConfig | None = None,
                     text_model: str | None = None, executor: Any = None, progress: bool = True) -> BuildResult:
    """Build (or complete) the text store; `executor`: None (inline), a concurrent.futures executor or a Dask Client."""
    from ..build import run_build

    return run_build(plan_mosei_text(input, build_config, text_model), store, executor=executor, show_bar=progress)


@dataclass(frozen=True)
class MoseiTextOptions:
    input: str = option(help="the label CSV (video_id,clip_id,text,label,mode), e.g. mosei/label_train_valid.csv",
                        path=True, flow_help="The label CSV (video_id,clip_id,text,label,mode), an absolute path on "
                                             "the machine serving this flow.")
    text_model: str | None = option(None, "local transformers encoder folder (default: packaged MiniLM)", path=True)


def plan_mosei_text_recipe(options: MoseiTextOptions, config: BuildConfig) -> BuildPlan:
    return plan_mosei_text(options.input, config, options.text_model)


RECIPE = Recipe("mosei-text", "CMU-MOSEI transcripts and sentiment labels -> text-only word-level store (MiniLM)",
                MoseiTextOptions, plan_mosei_text_recipe, flow="build-mosei-text-features",
                function="build_mosei_text_features", units_per_shard=VIDEO_UNITS_PER_SHARD,
                unit_help="batches of segments", shard_noun="segments", shard_count_at=("specs",))
