"""Recipe: raw videos (MMSA layout, a manifest, single files) or text-only label files to a feature store.

A unit is one media file with all its segments (decoded once), all the media files of one speaker (rows with a
manifest `speaker`: the face set's speaker-relative cues need every one of them first), or a batch of
text-only segments. Per
segment: words (forced alignment of the transcript, or Whisper when there is none), openSMILE frames, face
frames from the chosen backend, and word vectors from the text encoder (all of a unit's segments in one
batch). The build declares only the feature sets its inputs can produce: no media anywhere makes a text-only
store, audio files only make no face set. Every record carries every declared set: a segment without audio,
video or media gets zero frames for that set, so its words have coverage 0 there. A segment whose `language`
is not English (or `und`) is timed by the multilingual recogniser (stages/words.py) and skips the English text
encoder (text coverage 0); the build report's notes and counters say so, as they do for every alignment fallback. Rows rejected
while reading the inputs become failure rows of the store through one extra unit. Unit payloads are the media
stage's typed units (`MediaUnit`, `TextUnit`, `RejectedRows` in pipelines/stages/media.py).

Media at a URL (a manifest's `video_path` or the input itself): the unit's key names the object by its URL,
size and ETag (one HEAD while planning) instead of path, size and mtime, and the plan's stage is `media-url`
(`pipelines.stages.url_media`), which copies each unit's media to a local temporary file on the worker, runs
the media stage on it and deletes it. Plans without URL media are unchanged (stage `media`, same keys).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feature_schemas import FeatureSet, labels_record
from feature_schemas.storage import input_suffix, is_url, local_input_key, stat_input

from ..errors import PipelineError
from ..inputs import AUDIO_SUFFIXES, ParsedInputs, SegmentSpec, discover_inputs, resolve_emotion_classes
from ..records import Failure, WorkUnit
from ..stages.media import (
    MediaUnit,
    RejectedRows,
    SpeakerUnit,
    TextUnit,
    VideoConfig,
    absent_sets,
    feature_sets_for,
    process_video_unit,
)
from ..stages.url_media import process_url_media_unit

__all__ = ["VideoConfig", "build_videos", "feature_sets_for", "plan_videos", "process_video_unit", "video_units"]

if TYPE_CHECKING:
    from ..store_writer import BuildPlan, BuildResult

RECIPE_VERSION = "videos/1"

# A few videos per shard, so that a handful of videos still spreads over the workers. Every entry point
# (CLI, flow, plan_videos) uses it: a shard's key covers its size, so mixing sizes would rebuild every shard.
VIDEO_UNITS_PER_SHARD = 2


# --- planning ---------------------------------------------------------------------------------------------

InputLike = str | os.PathLike | ParsedInputs | Sequence[SegmentSpec] | Sequence[str | os.PathLike]


def parse_inputs(input: InputLike, split: str | None = None) -> ParsedInputs:
    """One ParsedInputs from a path, several paths, specs or an already parsed input. A path that cannot
    be read at all becomes a failure when other inputs are given, and raises when it is the only one."""
    if isinstance(input, ParsedInputs):
        return input
    if isinstance(input, str | os.PathLike):
        return discover_inputs(input, split=split)
    items = list(input)
    if items and all(isinstance(s, SegmentSpec) for s in items):
        return ParsedInputs(list(items), [], "specs") + ParsedInputs()
    merged = ParsedInputs()
    for item in items:
        try:
            merged = merged + discover_inputs(item, split=split)
        except PipelineError as e:
            merged = merged + ParsedInputs(failures=[Failure(Path(item).stem or str(item), e.stage, str(e), str(item))])
    return merged


def _file_key(path: str | Path) -> list[Any]:
    """What decides whether a media unit must be rebuilt: [path, size, mtime] (os.stat) of a local file,
    [URL, size, ETag] (a HEAD) of an object at a URL; [where, None, None] when it cannot be read."""
    if is_url(path):
        try:
            return stat_input(str(path)).key()
        except Exception:  # noqa: BLE001 - the unit fails on its worker with the reason; the key only has to be stable
            return [str(path), None, None]
    try:
        return local_input_key(path)
    except OSError:
        return [str(path), None, None]


def _spec_key(s: SegmentSpec) -> list[Any]:
    key = [s.segment_id, s.video_id, str(s.video_path), s.start, s.end, s.transcript, sorted(s.labels.items()),
           s.split, s.source]
    key = key + [s.language] if s.language != "en" else key  # English rows keep the keys they always had
    return key + [{"speaker": s.speaker}] if s.speaker is not None else key


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _input_media(specs: Sequence[SegmentSpec]) -> tuple[bool, bool]:
    """(any media, any file that may hold pictures): a set no input can fill is not declared."""
    media = [s.video_path for s in specs if s.video_path is not None]
    return bool(media), any(input_suffix(p) not in AUDIO_SUFFIXES for p in media)


def video_units(input: InputLike, config: VideoConfig = VideoConfig(),
                split: str | None = None) -> tuple[list[WorkUnit], list[FeatureSet], dict[str, Any]]:
    """Plan a build: one unit per media file (all its segments), text-only segments in batches, one unit for
    the rows rejected while reading; the feature sets; and the recipe's report."""
    parsed = parse_inputs(input, split)
    feature_sets = feature_sets_for(config, *_input_media(parsed.specs))
    by_video: dict[str, list[SegmentSpec]] = {}
    by_speaker: dict[str, dict[str, list[SegmentSpec]]] = {}
    text_only: list[SegmentSpec] = []
    for s in parsed.specs:
        if s.video_path is None:
            text_only.append(s)
        elif s.speaker is None:
            by_video.setdefault(str(s.video_path), []).append(s)
        else:
            by_speaker.setdefault(s.speaker, {}).setdefault(str(s.video_path), []).append(s)

    def media_unit(path: str, specs: list[SegmentSpec]) -> MediaUnit:
        pictures = input_suffix(path) not in AUDIO_SUFFIXES
        return MediaUnit(path, tuple(specs), pictures, absent_sets(config, feature_sets, True, pictures))

    units: list[WorkUnit] = []
    for path, specs in sorted(by_video.items()):
        key = _digest([RECIPE_VERSION, _file_key(path), [_spec_key(s) for s in specs]])
        units.append(WorkUnit(f"video:{path}", key, media_unit(path, specs)))
    for speaker, files in sorted(by_speaker.items()):  # one unit per speaker: the baseline sees all their media
        key = _digest([RECIPE_VERSION, {"speaker": speaker},
                       [[_file_key(p), [_spec_key(s) for s in specs]] for p, specs in sorted(files.items())]])
        units.append(WorkUnit(f"speaker:{speaker}", key,
                              SpeakerUnit(speaker, tuple(media_unit(p, sp) for p, sp in sorted(files.items())))))
    step = max(1, config.text_segments_per_unit)
    text_only.sort(key=lambda s: (s.split, s.segment_id))
    no_media = absent_sets(config, feature_sets, False, False)
    for i in range(0, len(text_only), step):
        batch = text_only[i: i + step]
        key = _digest([RECIPE_VERSION, [_spec_key(s) for s in batch]])
        units.append(WorkUnit(f"text:{batch[0].segment_id}..{batch[-1].segment_id}", key,
                              TextUnit(tuple(batch), batch[0].source_path, no_media)))
    if parsed.failures:
        failures = list(parsed.failures)
        key = _digest([RECIPE_VERSION, [asdict(f) for f in failures]])
        units.append(WorkUnit("input-rejections", key, RejectedRows(tuple(failures), parsed.path)))
    report = {
        "input": parsed.source,
        "input_path": parsed.path,
        "segments_planned": len(parsed.specs),
        "videos": len(by_video) + sum(len(f) for f in by_speaker.values()),
        "text_only_segments": len(text_only),
        "rows_rejected": len(parsed.failures),
        "splits_planned": parsed.splits(),
    }
    if by_speaker:
        report["speakers_planned"] = len(by_speaker)
    languages = Counter(s.language for s in parsed.specs)
    if set(languages) - {"en"}:
        report["languages_planned"] = dict(sorted(languages.items()))
    return units, feature_sets, report


# --- the whole build --------------------------------------------------------------------------------------

def plan_videos(input: InputLike, config: VideoConfig = VideoConfig(), build_config: Any = None,
                split: str | None = None, name: str | None = None,
                emotion_classes: str | Sequence[str] | None = None) -> BuildPlan:
    """Everything decided before work runs (units, feature sets, report) as the writer's BuildPlan for the
    media stage (`stages.media.process_video_unit`; `stages.url_media.process_url_media_unit` for media at
    URLs; options: `config`), for `pipelines.build.run_build` or a Prefect flow. `build_config` None: the
    writer's BuildConfig with 2 videos per shard, so a few videos still spread over the workers. `split`: a MELD file's split, a manifest's default split or a
    single video's. `emotion_classes`: the store's emotion class set (a known set's name or class names;
    None: found from the rows); it is recorded in the manifest's `labels`."""
    from ..store_writer import BuildConfig, BuildPlan

    parsed, classes = resolve_emotion_classes(parse_inputs(input, split), emotion_classes)
    units, sets, report = video_units(parsed, config, split)
    info = {"recipe": RECIPE_VERSION, "config": config.to_dict(), "input": report.get("input_path"),
            "labels": labels_record(classes)}
    name = name or Path(str(report.get("input_path") or "videos")).stem
    build_config = build_config if build_config is not None else BuildConfig(units_per_shard=VIDEO_UNITS_PER_SHARD)
    remote = any(isinstance(u.payload, MediaUnit) and is_url(u.payload.path) for u in units)
    if any(isinstance(u.payload, SpeakerUnit) and any(is_url(f.path) for f in u.payload.files) for u in units):
        raise PipelineError(f"{report.get('input_path')}: a manifest with a speaker column cannot have media at URLs "
                            "yet (a speaker's files are built together on one worker): give local paths, or drop "
                            "the speaker column", stage="read", source_path=str(report.get("input_path")))
    stage = process_url_media_unit if remote else process_video_unit
    return BuildPlan(name, units, stage, sets, build_config, info, report, config)


def build_videos(input: InputLike, store: str | os.PathLike, config: VideoConfig = VideoConfig(),
                 executor: Any = None, build_config: Any = None, name: str | None = None, split: str | None = None,
                 progress: bool = True, emotion_classes: str | Sequence[str] | None = None) -> BuildResult:
    """Build (or complete) a store from raw videos / label files; returns the writer's BuildResult.
    `executor`: None (inline), a concurrent.futures executor or a Dask Client."""
    from ..build import run_build

    plan = plan_videos(input, config, build_config, split, name, emotion_classes)
    return run_build(plan, store, executor=executor, show_bar=progress)
