"""The media stage: one unit of media (a video or audio file with its segments, or a batch of text-only
segments) -> segment records. Per segment: words (forced alignment of the transcript, or Whisper when there is
none), openSMILE frames, face frames from the chosen backend, and word vectors from the text encoder (all of a
unit's segments in one batch). Every record carries every declared set: a segment without audio, video or media
gets zero frames for that set, so its words have coverage 0 there. A segment whose `language` is not English
skips the English aligner, Whisper and text encoder (uniform word times, text coverage 0), and the build
report's notes and counters say so, as they do for every alignment fallback.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import FeatureSet

from ..audio import (
    AudioConfig,
    audio_feature_set,
    empty_frames,
    extract_audio,
    extract_functionals,
    functionals_feature_set,
)
from ..errors import PipelineError
from ..face.summary import summarise_frames, summary_feature_set
from ..inputs import SegmentSpec
from ..media import SAMPLE_RATE, cut, probe, read_audio
from ..records import Failure, FrameFeatures, SegmentRecord, UnitResult, WordFeatures, Words, WorkUnit
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
