"""Recipe: raw videos (MMSA layout, a manifest, single files) or text-only label files to a feature store.

A unit is one media file with all its segments (decoded once), or a batch of text-only segments. Per
segment: words (forced alignment of the transcript, or Whisper when there is none), openSMILE frames, face
frames from the chosen backend, and word vectors from the text encoder (all of a unit's segments in one
batch). The build declares only the feature sets its inputs can produce: no media anywhere makes a text-only
store, audio files only make no face set. Every record carries every declared set: a segment without audio,
video or media gets zero frames for that set, so its words have coverage 0 there. A segment whose `language`
is not English skips the English aligner, Whisper and text encoder (uniform word times, text coverage 0),
and the build report's notes and counters say so, as they do for every alignment fallback. Rows rejected
while reading the inputs become failure rows of the store through one extra unit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import FeatureSet, labels_record

from ..audio import (
    AudioConfig,
    audio_feature_set,
    empty_frames,
    extract_audio,
    extract_functionals,
    functionals_feature_set,
)
from ..face.summary import summarise_frames, summary_feature_set
from ..inputs import AUDIO_SUFFIXES, ParsedInputs, SegmentSpec, discover_inputs, resolve_emotion_classes
from ..media import SAMPLE_RATE, cut, probe, read_audio
from ..records import (
    Failure,
    FrameFeatures,
    PipelineError,
    SegmentRecord,
    UnitResult,
    WordFeatures,
    Words,
    WorkUnit,
)
from ..text import TextConfig, encode_words, sentence_feature_set, text_feature_set
from ..words import (
    AlignConfig,
    AsrConfig,
    align_transcript,
    is_english,
    transcribe,
    transcript_words,
    written_words,
)

RECIPE_VERSION = "videos/1"
FACE_BACKENDS = ("dlib", "mediapipe", "pyfeat", "openface")


@dataclass(frozen=True)
class VideoConfig:
    """Everything that shapes the features; it travels into the manifest, so a changed setting rebuilds.

    fps: face frames per second. audio_set/audio_level: openSMILE egemaps|compare, lld|functionals.
    face: face backend name or None (no face feature set); face_options: that backend's settings.
    text_model: local transformers folder (None: the packaged MiniLM). align: forced alignment of given
    transcripts (off: words spread over the segment). transcribe: Whisper for segments without a transcript.
    asr_model: CTranslate2 Whisper folder (None: the packaged tiny.en). threads: per worker process for torch
    and Whisper (a Dask worker per core wants 1). utterance: also write utterance-level sets (schema 2): the
    openSMILE functionals of each segment, the text encoder's pooled sentence vector and a face summary."""

    fps: float = 5.0
    audio_set: str = "egemaps"
    audio_level: str = "lld"
    face: str | None = "mediapipe"
    face_options: dict[str, Any] = field(default_factory=dict)
    text_model: str | None = None
    text_name: str = "text_minilm"
    text_batch_size: int = 32
    align: bool = True
    asr_fallback: bool = True
    transcribe: bool = True
    asr_model: str | None = None
    max_forced_seconds: float = 90.0
    text_segments_per_unit: int = 512
    threads: int | None = 1
    utterance: bool = True

    def __post_init__(self) -> None:
        if self.face is not None and self.face not in FACE_BACKENDS:
            raise ValueError(f"face backend {self.face!r}: choose one of {', '.join(FACE_BACKENDS)} or None")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, not {self.fps}")
        AudioConfig(self.audio_set, self.audio_level)

    def audio_config(self) -> AudioConfig:
        return AudioConfig(self.audio_set, self.audio_level)

    def text_config(self) -> TextConfig:
        return TextConfig(self.text_model, self.text_name, self.text_batch_size, threads=self.threads)

    def align_config(self) -> AlignConfig:
        return AlignConfig(forced=self.align, asr_fallback=self.asr_fallback and self.align,
                           max_forced_seconds=self.max_forced_seconds)

    def asr_config(self) -> AsrConfig:
        return AsrConfig(self.asr_model, threads=self.threads or 0)

    def face_backend(self) -> Any:
        """The face backend instance (cached per process by the face package), or None."""
        if self.face is None:
            return None
        from ..face import get_backend

        return get_backend(self.face, **{"fps": self.fps, **self.face_options})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _file_key(path: Path) -> list[Any]:
    try:
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), None, None]


def _spec_key(s: SegmentSpec) -> list[Any]:
    key = [s.segment_id, s.video_id, str(s.video_path), s.start, s.end, s.transcript, sorted(s.labels.items()),
           s.split, s.source]
    return key + [s.language] if s.language != "en" else key  # English rows keep the keys they always had


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def feature_sets_for(config: VideoConfig, audio: bool = True, video: bool = True) -> list[FeatureSet]:
    """The build's feature sets in store order: text, audio (when some input has media), face (when a backend is
    chosen and some input can have pictures), then with `config.utterance` the utterance-level ones: sentence
    vector, audio functionals (with audio), face summary (with a face set)."""
    sets = [text_feature_set(config.text_config())]
    if audio:
        sets.append(audio_feature_set(config.audio_config()))
    backend = config.face_backend() if audio and video else None
    if backend is not None:
        sets.append(backend.feature_set())
    if config.utterance:
        sets.append(sentence_feature_set(config.text_config()))
        if audio and config.audio_level != "functionals":  # else the word-level set already is `<set>_functionals`
            sets.append(functionals_feature_set(config.audio_config()))
        sets += [summary_feature_set(sets[2])] if backend is not None else []  # sets[2]: the face set
    return sets


def _input_media(specs: Sequence[SegmentSpec]) -> tuple[bool, bool]:
    """(any media, any file that may hold pictures): a set no input can fill is not declared."""
    media = [s.video_path for s in specs if s.video_path is not None]
    return bool(media), any(Path(p).suffix.lower() not in AUDIO_SUFFIXES for p in media)


def video_units(input: InputLike, config: VideoConfig = VideoConfig(),
                split: str | None = None) -> tuple[list[WorkUnit], list[FeatureSet], dict[str, Any]]:
    """Plan a build: one unit per media file (all its segments), text-only segments in batches, one unit for
    the rows rejected while reading; the feature sets; and the recipe's report."""
    parsed = parse_inputs(input, split)
    feature_sets = feature_sets_for(config, *_input_media(parsed.specs))
    by_video: dict[str, list[SegmentSpec]] = {}
    text_only: list[SegmentSpec] = []
    for s in parsed.specs:
        if s.video_path is None:
            text_only.append(s)
        else:
            by_video.setdefault(str(s.video_path), []).append(s)
    units: list[WorkUnit] = []
    for path, specs in sorted(by_video.items()):
        key = _digest([RECIPE_VERSION, _file_key(Path(path)), [_spec_key(s) for s in specs]])
        units.append(WorkUnit(f"video:{path}", key, {"kind": "video", "path": path, "specs": specs,
                                                     "source_path": path}))
    step = max(1, config.text_segments_per_unit)
    text_only.sort(key=lambda s: (s.split, s.segment_id))
    for i in range(0, len(text_only), step):
        batch = text_only[i: i + step]
        key = _digest([RECIPE_VERSION, [_spec_key(s) for s in batch]])
        units.append(WorkUnit(f"text:{batch[0].segment_id}..{batch[-1].segment_id}", key,
                              {"kind": "text", "specs": batch, "source_path": batch[0].source_path}))
    if parsed.failures:
        failures = list(parsed.failures)
        key = _digest([RECIPE_VERSION, [asdict(f) for f in failures]])
        units.append(WorkUnit("input-rejections", key, {"kind": "failures", "failures": failures,
                                                        "source_path": parsed.path}))
    report = {
        "input": parsed.source,
        "input_path": parsed.path,
        "segments_planned": len(parsed.specs),
        "videos": len(by_video),
        "text_only_segments": len(text_only),
        "rows_rejected": len(parsed.failures),
        "splits_planned": parsed.splits(),
    }
    languages = Counter(s.language for s in parsed.specs)
    if set(languages) - {"en"}:
        report["languages_planned"] = dict(sorted(languages.items()))
    return units, feature_sets, report


# --- processing -------------------------------------------------------------------------------------------

def process_video_unit(unit: WorkUnit, config: VideoConfig) -> UnitResult:
    """Features of one unit; a problem with one segment is a failure of that segment only."""
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    kind = unit.payload["kind"]
    if kind == "failures":
        return UnitResult(failures=list(unit.payload["failures"]), report={"rows_rejected": len(unit.payload["failures"])})
    sets = feature_sets_for(config)
    if kind == "text":
        return _process_text(unit.payload["specs"], config, sets)
    if kind == "video":
        return _process_video(Path(unit.payload["path"]), unit.payload["specs"], config, sets)
    raise PipelineError(f"unit {unit.unit_id}: unknown kind {kind!r}", stage="process", item_id=unit.unit_id)


@dataclass
class _Pending:
    spec: SegmentSpec
    row: dict[str, Any]
    words: Words
    frames: dict[str, FrameFeatures]
    written: list[str]  # what the text encoder reads per word: the word with its punctuation
    utterance: dict[str, np.ndarray] = field(default_factory=dict)  # utterance-level vectors found so far


def _empty_sets(sets: list[FeatureSet], config: VideoConfig) -> dict[str, FrameFeatures]:
    return {fs.name: empty_frames(fs.dim) for fs in sets if fs.name != config.text_name and fs.level == "word"}


def _not_english_text(p: _Pending, dim: int, config: VideoConfig, report: Counter[str],
                      notes: list[dict[str, str]]) -> WordFeatures:
    """Zero vectors with coverage 0: an English encoder's reading of another language is noise, not features."""
    n = len(p.words.words)
    report["text.skipped_not_english"] += 1
    notes.append({"item_id": p.spec.segment_id, "stage": "text",
                  "note": f"language {p.spec.language!r}: {config.text_name} (English) not used; its word vectors "
                          "are zero with coverage 0"})
    return WordFeatures(np.zeros((n, dim), np.float32), np.zeros(n, np.float32))


def _finish(pending: list[_Pending], failures: list[Failure], report: Counter[str], config: VideoConfig,
            text_dim: int, notes: list[dict[str, str]] | None = None) -> UnitResult:
    """Encode every pending English segment's words in one batch and assemble the records."""
    records: list[SegmentRecord] = []
    notes = list(notes or [])
    english = [p for p in pending if is_english(p.spec.language)]
    vectors: dict[int, WordFeatures] = {}
    sentences: dict[int, np.ndarray | None] = {}  # pooled sentence vectors (utterance-level), English only
    if english:
        try:
            encoded = encode_words([p.words.words for p in english], config.text_config(),
                                   [p.written for p in english])
            vectors = {id(p): enc.features for p, enc in zip(english, encoded, strict=True)}
            sentences = {id(p): enc.sentence for p, enc in zip(english, encoded, strict=True)}
        except PipelineError as e:
            failures += [Failure(p.spec.segment_id, "text", str(e), e.source_path) for p in english]
            pending = [p for p in pending if not is_english(p.spec.language)]
    for p in pending:
        text = vectors[id(p)] if is_english(p.spec.language) else _not_english_text(p, text_dim, config, report, notes)
        utterance = dict(p.utterance)
        if config.utterance and (sentence := sentences.get(id(p))) is not None:
            utterance[f"{config.text_name}_sentence"] = sentence
        words = replace(p.words, written=list(p.written))  # kept in the store for a fine-tuned text encoder
        records.append(SegmentRecord(p.row, words, p.frames, {config.text_name: text}, utterance))
        report[f"words.{p.words.method}"] += len(p.words.words)
        report[f"segments.{p.words.method}"] += 1
    report["segments_built"] += len(records)
    report["segments_failed"] += len(failures)
    return UnitResult(records, failures, dict(report), notes)


def _process_text(specs: list[SegmentSpec], config: VideoConfig, sets: list[FeatureSet]) -> UnitResult:
    pending: list[_Pending] = []
    failures: list[Failure] = []
    report: Counter[str] = Counter()
    for s in specs:
        words = transcript_words(s.transcript)
        if not words:
            failures.append(Failure(s.segment_id, "read", f"{s.source_path}: segment {s.segment_id} has no media and "
                                    "an empty transcript: no words to build", s.source_path))
            continue
        if not is_english(s.language):
            failures.append(Failure(s.segment_id, "text", f"{s.source_path}: segment {s.segment_id} has no media and "
                                    f"language {s.language!r}: the text encoder {config.text_name} reads English only, "
                                    "so there is nothing to build", s.source_path))
            report[f"segments.language.{s.language}"] += 1
            continue
        pending.append(_Pending(s, s.segment_row(), Words.untimed(words), _empty_sets(sets, config),
                                    written_words(s.transcript)))
    report["text_only_segments"] += len(pending)
    return _finish(pending, failures, report, config, sets[0].dim)


def _align_note(s: SegmentSpec, method: str, code: str, note: str, report: Counter[str],
                notes: list[dict[str, str]]) -> None:
    """Count a fallback by its reason and keep the reason for the segment (the store keeps only the method)."""
    report[f"align_fallback.{method}.{code or 'unknown'}"] += 1
    if not is_english(s.language):
        report[f"segments.language.{s.language}"] += 1
    notes.append({"item_id": s.segment_id, "stage": "align", "note": f"{method}: {note or code}"})


def _transcribe(seg_audio: np.ndarray, start: float, s: SegmentSpec, config: VideoConfig) -> Any:
    """Whisper for a segment without transcript; the packaged model is English-only, so other languages need
    a model of their own (`asr_model`)."""
    if is_english(s.language):
        return transcribe(seg_audio, start, config.asr_config())
    if config.asr_model is None:
        raise PipelineError(f"segment {s.segment_id} (language {s.language!r}) has no transcript and the packaged "
                            "Whisper model is English-only: give a transcript or a multilingual asr_model",
                            stage="align", item_id=s.segment_id)
    return transcribe(seg_audio, start, dataclasses.replace(config.asr_config(), language=s.language.split("-")[0]))


def _process_video(path: Path, specs: list[SegmentSpec], config: VideoConfig, sets: list[FeatureSet]) -> UnitResult:
    pending: list[_Pending] = []
    failures: list[Failure] = []
    notes: list[dict[str, str]] = []
    report: Counter[str] = Counter()
    try:
        info = probe(path)
    except PipelineError as e:
        return UnitResult([], [Failure(s.segment_id, e.stage, str(e), str(path)) for s in specs],
                          {"segments_failed": len(specs), "videos_unreadable": 1})
    audio: np.ndarray | None = None
    audio_problem = ""
    if info.has_audio:
        try:
            audio = read_audio(path)
        except PipelineError as e:
            audio_problem = str(e)
            report["videos_audio_undecodable"] += 1
    else:
        report["videos_without_audio"] += 1
    if not info.has_video:
        report["files_without_video"] += 1
    decoded_end = len(audio) / SAMPLE_RATE if audio is not None else None
    media_end = max(x for x in (info.duration, decoded_end, 0.0) if x is not None)
    if audio is not None and info.duration and decoded_end is not None and decoded_end < info.duration - 0.5:
        report["videos_audio_shorter_than_container"] += 1
    face = config.face_backend()
    audio_cfg = config.audio_config()
    face_set = sets[2] if face is not None else None
    for s in specs:
        stage = "read"
        try:
            start = s.start if s.start is not None else 0.0
            end = s.end if s.end is not None else media_end
            if start >= media_end:
                raise PipelineError(f"{path}: segment {s.segment_id} starts at {start:.2f} s, at or after the end of "
                                    f"the media ({media_end:.2f} s)", stage="read")
            if end > media_end + 0.05:
                report["segments_clipped_to_media_end"] += 1
                end = media_end
            seg_audio = cut(audio, start, end) if audio is not None else None
            transcript = s.transcript
            words = transcript_words(transcript)
            stage = "align"
            if words:  # align off: align_config() has neither forced alignment nor the ASR fallback
                al = align_transcript(seg_audio, words, start, config.align_config(), config.asr_config(),
                                      duration=end - start, language=s.language)
                for k, v in al.report.items():
                    report[f"align.{k}"] += v
                w = al.words
                if w.method in ("asr", "uniform"):
                    _align_note(s, w.method, al.fallback, al.note, report, notes)
            elif config.transcribe and seg_audio is not None and len(seg_audio):
                tr = _transcribe(seg_audio, start, s, config)
                w, transcript = tr.words, tr.text
                report["segments_transcribed"] += 1
                if not w.words:
                    raise PipelineError(f"{path}: segment {s.segment_id} has no transcript and Whisper recognised no "
                                        "speech: no words to build", stage="align")
            else:
                why = ("transcription is off" if not config.transcribe else
                       f"the file has no usable audio{': ' + audio_problem if audio_problem else ''}")
                raise PipelineError(f"{path}: segment {s.segment_id} has no transcript and {why}: no words to build",
                                    stage="align")
            stage = "audio"
            frames = {audio_cfg.name: extract_audio(seg_audio, start, audio_cfg, item_id=s.segment_id)}
            if face is not None and face_set is not None:
                stage = "face"
                if info.has_video:
                    frames[face_set.name] = face.extract(path, start, end, config.fps)
                else:
                    frames[face_set.name] = empty_frames(face_set.dim)
            pending.append(_Pending(s, s.segment_row(start, end, transcript), w, frames,
                                    written_words(transcript, w.words),
                                    _utterance_vectors(seg_audio, frames, face_set, config, s.segment_id)))
        except PipelineError as e:
            failures.append(Failure(s.segment_id, e.stage or stage, str(e), e.source_path or str(path)))
        except Exception as e:  # noqa: BLE001 - a library's own error on one segment must not stop the others
            failures.append(Failure(s.segment_id, stage, f"{path}: segment {s.segment_id}: {type(e).__name__}: {e}",
                                    str(path)))
    report["video_ms"] += int(round(media_end * 1000))
    return _finish(pending, failures, report, config, sets[0].dim, notes)


def _utterance_vectors(seg_audio: np.ndarray | None, frames: dict[str, FrameFeatures], face_set: FeatureSet | None,
                       config: VideoConfig, segment_id: str) -> dict[str, np.ndarray]:
    """The segment's audio functionals and face summary (absent ones left out: the writer marks them)."""
    if not config.utterance:
        return {}
    out: dict[str, np.ndarray] = {}
    functionals = extract_functionals(seg_audio, config.audio_config(), item_id=segment_id) if config.audio_level != "functionals" else None
    if functionals is not None:
        out[functionals_feature_set(config.audio_config()).name] = functionals
    if face_set is not None and (summary := summarise_frames(frames[face_set.name])) is not None:
        out[f"{face_set.name}_summary"] = summary
    return out


# --- the whole build --------------------------------------------------------------------------------------

def plan_videos(input: InputLike, config: VideoConfig = VideoConfig(), build_config: Any = None,
                split: str | None = None, name: str | None = None,
                emotion_classes: str | Sequence[str] | None = None) -> Any:
    """Everything decided before work runs (units, feature sets, report) as the writer's BuildPlan, for
    `run_plan` or a Prefect flow. `build_config` None: the writer's BuildConfig with 2 videos per shard, so a
    few videos still spread over the workers. `split`: a MELD file's split, a manifest's default split or a
    single video's. `emotion_classes`: the store's emotion class set (a known set's name or class names;
    None: found from the rows); it is recorded in the manifest's `labels`."""
    from ..store_writer import BuildConfig, BuildPlan

    parsed, classes = resolve_emotion_classes(parse_inputs(input, split), emotion_classes)
    units, sets, report = video_units(parsed, config, split)
    info = {"recipe": RECIPE_VERSION, "config": config.to_dict(), "input": report.get("input_path"),
            "labels": labels_record(classes)}
    name = name or Path(str(report.get("input_path") or "videos")).stem
    return BuildPlan(name, units, functools.partial(process_video_unit, config=config), sets,
                     build_config if build_config is not None else BuildConfig(units_per_shard=VIDEO_UNITS_PER_SHARD), info, report)


def build_videos(input: InputLike, store: str | os.PathLike, config: VideoConfig = VideoConfig(),
                 executor: Any = None, build_config: Any = None, name: str | None = None, split: str | None = None,
                 progress: bool = True, emotion_classes: str | Sequence[str] | None = None) -> Any:
    """Build (or complete) a store from raw videos / label files; returns the writer's BuildResult.
    `executor`: None (inline), a concurrent.futures executor or a Dask Client."""
    from ..store_writer import run_plan

    plan = plan_videos(input, config, build_config, split, name, emotion_classes)
    return run_plan(plan, store, executor=executor, progress=progress)
