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
size and ETag (one HEAD while planning) instead of path, size and mtime, and the plan's stage is
`stages.url_media.process_url_media_unit`, which copies each unit's media to a local temporary file on the
worker, runs the media stage on it and deletes it. Plans without URL media are unchanged
(`stages.media.process_video_unit`, same keys).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feature_schemas import FeatureSet, labels_record
from feature_schemas.storage import input_suffix, is_url, local_input_key, stat_input

from ..errors import PipelineError
from ..inputs import (
    AUDIO_SUFFIXES,
    VIDEO_SUFFIXES,
    ParsedInputs,
    SegmentSpec,
    columns_of,
    media_problem,
    read_manifest,
    read_rows,
    read_video,
    resolve_emotion_classes,
    suffix_of,
    where,
)
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
from .base import Recipe, option
from .meld import read_meld
from .mmsa_fet import read_mmsa_fet
from .mosi_text import read_mosi_labels

__all__ = ["VideoConfig", "build_videos", "feature_sets_for", "plan_videos", "process_video_unit", "video_units"]

if TYPE_CHECKING:
    from ..store_writer import BuildPlan, BuildResult

RECIPE_VERSION = "videos/1"

# A few videos per shard, so that a handful of videos still spreads over the workers. Every entry point
# (CLI, flow, plan_videos) uses it: a shard's key covers its size, so mixing sizes would rebuild every shard.
VIDEO_UNITS_PER_SHARD = 2


# --- which reader: the input's shape ----------------------------------------------------------------------

def discover_inputs(path: str | Path, split: str | None = None, **kwargs: Any) -> ParsedInputs:
    """Pick the parser from the input's shape: a folder with label.csv (MMSA), a media file, or a table
    whose header says which format it is. `split` is MELD's split, a manifest's default split or a video's.
    A URL names one object (a manifest, a label file or a media file), not an MMSA folder."""
    path = where(path)
    url = isinstance(path, str)
    suffix = suffix_of(path)
    media = suffix in VIDEO_SUFFIXES + AUDIO_SUFFIXES
    if not url:  # a URL's object is checked by the reader, with one HEAD
        if path.is_dir():
            if (path / "label.csv").is_file():
                return read_mmsa_fet(path, **kwargs)
            raise PipelineError(f"{path}: a folder input must hold label.csv and Raw/ (MMSA-FET layout)",
                                stage="read", source_path=str(path))
        if problem := media_problem(path, "a media file" if media else "an input file"):
            raise PipelineError(f"input {path} {problem}", stage="read", source_path=str(path))
    if media:
        return read_video(path, split=split or "test", **kwargs)
    if suffix not in (".csv", ".tsv", ".jsonl", ".ndjson"):
        expected = ("a URL input is a .csv or .jsonl manifest, a MELD or MOSI label file, or one media file" if url
                    else "expected a folder, a video, .csv or .jsonl")
        raise PipelineError(f"{path}: unknown input type {suffix!r} ({expected})", stage="read", source_path=str(path))
    cols = columns_of(read_rows(path))
    if {"video_id", "clip_id", "mode"} <= cols:
        if url:
            raise PipelineError(f"{path}: an MMSA-FET label.csv at a URL is not supported (its Raw/ folder is read "
                                "by path); copy the folder locally, or give a manifest with video_path URLs",
                                stage="read", source_path=path)
        return read_mmsa_fet(path.parent, label_file=path.name, **kwargs)
    if {"Utterance", "Emotion", "Sentiment"} <= cols:
        if split is None:
            raise PipelineError(f"{path}: a MELD file needs split= (train, valid or test)", stage="read",
                                source_path=str(path))
        return read_meld(path, split)
    if {"id", "text", "label", "mode"} <= cols:
        return read_mosi_labels(path)
    return read_manifest(path, default_split=split or "test", **kwargs)


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


# --- as the command line and the flows offer it -------------------------------------------------------------

def _extractor(kind: str, what: str, none: str = "", role: str = "") -> Any:
    """An extractor option: its choices, default and help from the extractor registry (read, not imported)."""
    from ..extract import registry

    names = registry.names(kind)  # type: ignore[arg-type]
    return option(registry.default(kind, role), f"{what}: {registry.help_text(kind)}{none}",  # type: ignore[arg-type]
                  choices=[*names, "none"] if none else names,
                  flow_help=f"{what[0].upper()}{what[1:]} by name (`mmolre extractors` lists them){' or none' if none else ''}.")


@dataclass(frozen=True)
class VideoRecipeOptions:
    input: str = option(help="folder, manifest or video file", path=True,
                        flow_help="An MMSA-FET folder, a manifest (CSV/JSONL with video_path, transcript, labels, "
                                  "split) or one video file; an absolute path on the machine serving this flow, or a "
                                  "URL (s3://bucket/manifest.csv).")
    face: str | None = _extractor("face", "face backend", "; none: no face features")
    audio: str = _extractor("audio", "audio extractor")
    text: str = _extractor("text", "text encoder")
    aligner: str = _extractor("aligner", "aligner of English transcripts")
    asr: str = _extractor("asr", "recogniser of English speech (no transcript; the aligner's fallback)")
    aligner_multilingual: str = _extractor("aligner", "aligner of transcripts in other languages", role="multilingual")
    asr_multilingual: str = _extractor("asr", "recogniser of other languages and of language und", role="multilingual")
    audio_model: str | None = option(None, "local wav2vec2 / HuBERT / Data2Vec-Audio folder for --audio "
                                     "transformers-audio", path=True)
    audio_layer: int | None = option(None, "its hidden layer (0: feature projection; default -1, the last)")
    text_languages: str | None = option(None, "languages the text encoder reads (default en; * for a multilingual "
                                        "--text-model such as XLM-R)")
    fps: float | None = option(None, "video frames per second to analyse", check="rate",
                               flow_help="Face frames sampled per second; empty: 5.")
    split: str | None = option(None, "split for inputs that name none",
                               flow_help="The split of a single video or a MELD file, or a manifest's default split.")
    asr_model: str | None = option(None, "local model folder of the recogniser (default: its packaged one)", path=True)
    text_model: str | None = option(None, "local transformers encoder folder (default: packaged MiniLM)", path=True)
    emotion_classes: str | None = option(None, "the store's single-label emotion classes: meld, cremad, ravdess, "
                                         "iemocap or comma-separated names (default: found from the labels); rows "
                                         "outside the set fail")


def video_settings(options: VideoRecipeOptions) -> VideoConfig:
    """The media stage's settings: each extractor by name (None keeps the registry's default, face none: no face);
    a text set named after a local text model's folder (text_roberta_base, ...)."""
    named = {k: getattr(options, k) for k in ("text", "aligner", "asr", "aligner_multilingual", "asr_multilingual",
                                              "audio_model", "audio_layer", "text_languages", "fps", "asr_model",
                                              "text_model")}
    settings: dict[str, Any] = {"face": None if options.face in (None, "none") else options.face,
                                "audio_set": options.audio, **text_set_name(options.text_model)}
    return VideoConfig(**settings | {k: v for k, v in named.items() if v is not None})


def text_set_name(text_model: str | None) -> dict[str, str]:
    """VideoConfig's `text_name` for a local text model: its folder's name (`text_roberta_base`), so a store never
    calls another model's vectors `text_minilm`; none (the packaged MiniLM's default) without one."""
    if not text_model:
        return {}
    folder = re.sub(r"[^a-z0-9]+", "_", Path(text_model).name.lower()).strip("_")
    return {"text_name": "text_" + (folder or "model")}


def plan_video_recipe(options: VideoRecipeOptions, config: Any) -> BuildPlan:
    return plan_videos(options.input, video_settings(options), config, split=options.split,
                       emotion_classes=options.emotion_classes)


RECIPE = Recipe("videos", "raw videos: an MMSA-FET folder, a manifest (CSV/JSONL) or one video",
                VideoRecipeOptions, plan_video_recipe, flow="extract-video-features", function="extract_video_features",
                units_per_shard=VIDEO_UNITS_PER_SHARD, unit_help="videos (or batches of text-only segments)",
                media=True)
