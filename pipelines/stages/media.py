"""The media stage: one unit of media (a video or audio file with its segments, or a batch of text-only
segments) -> segment records, through the extractor interface (pipelines/extract).

Per segment of a media file: its words (the `pocketsphinx` aligner times the transcript; `whisper` recognises
the words when there is none), then one loop over the unit's frame extractors (openSMILE, the face backend
when the file can hold pictures), each giving the segment's frames and its utterance-level vector; at the
end the text encoder reads all of the unit's segments in one batch. A unit runs only the extractors its
media can feed; a build-declared set the unit cannot fill (no audio, no pictures, no media) gets zero
frames, so its words have coverage 0 there. A segment whose `language` is not English skips the English
aligner, Whisper and text encoder (uniform word times, text coverage 0), and the build report's notes and
counters say so, as they do for every alignment fallback.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from feature_schemas import FeatureSet

from ..errors import PipelineError
from ..extract import registry
from ..extract.audio import AudioConfig
from ..extract.base import FrameExtractor, SegmentMedia, empty_frames
from ..extract.text import SegmentText, TextConfig, TransformersTextEncoder
from ..extract.words.align import AlignConfig, PocketsphinxAligner
from ..extract.words.asr import AsrConfig, WhisperAsr
from ..extract.words.normalise import is_english, transcript_words, written_words
from ..inputs import SegmentSpec
from ..records import (
    Failure,
    FrameFeatures,
    SegmentRecord,
    UnitResult,
    WordFeatures,
    Words,
    WorkUnit,
)

_E = TypeVar("_E")
log = logging.getLogger(__name__)


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
        faces = registry.names("face")
        if self.face is not None and self.face not in faces:
            raise ValueError(f"face backend {self.face!r}: choose one of {', '.join(faces)} or None")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, not {self.fps}")
        AudioConfig(self.audio_set, self.audio_level)

    def audio_config(self) -> AudioConfig:
        return AudioConfig(self.audio_set, self.audio_level)

    def text_config(self) -> TextConfig:
        return TextConfig(self.text_model, self.text_name, self.text_batch_size, threads=self.threads)

    def asr_config(self) -> AsrConfig:
        return AsrConfig(self.asr_model, threads=self.threads or 0)

    def align_config(self) -> AlignConfig:
        return AlignConfig(forced=self.align, asr_fallback=self.asr_fallback and self.align,
                           max_forced_seconds=self.max_forced_seconds, asr=self.asr_config())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # --- the build's extractors, from the registry (one instance per process and settings) ---

    def text_encoder(self) -> TransformersTextEncoder:
        return _typed(registry.get("minilm", "text", **asdict(self.text_config())), TransformersTextEncoder)

    def aligner(self) -> PocketsphinxAligner:
        return _typed(registry.get("pocketsphinx", "words", **_shallow(self.align_config())), PocketsphinxAligner)

    def recogniser(self) -> WhisperAsr:
        return _typed(registry.get("whisper", "words", **asdict(self.asr_config())), WhisperAsr)

    def frame_extractors(self, audio: bool = True, video: bool = True) -> list[FrameExtractor]:
        """The frame extractors inputs with (audio, pictures) feed, in store order: audio, then face."""
        out: list[FrameExtractor] = []
        if audio:
            out.append(_typed(registry.get(self.audio_set, "audio", level=self.audio_level), FrameExtractor))
        if audio and video and self.face is not None:
            out.append(_typed(registry.get(self.face, "face", **{"fps": self.fps, **self.face_options}), FrameExtractor))
        return out


def _typed(extractor: object, cls: type[_E]) -> _E:
    """The registry's extractor as the class the stage uses it as (a plug-in under a built-in name may not be)."""
    if not isinstance(extractor, cls):
        raise PipelineError(f"extractor {extractor!r} is not a {cls.__name__}", stage="extract")
    return extractor


def _shallow(config: Any) -> dict[str, Any]:
    """A config dataclass's fields as they are (nested config dataclasses kept, unlike asdict)."""
    return {k: getattr(config, k) for k in config.__dataclass_fields__}


def feature_sets_for(config: VideoConfig, audio: bool = True, video: bool = True) -> list[FeatureSet]:
    """The build's feature sets in store order: text, audio (when some input has media), face (when a backend is
    chosen and some input can have pictures), then with `config.utterance` the utterance-level ones: sentence
    vector, audio functionals (with audio, LLDs), face summary (with a face set). Cheap: no model is loaded;
    an extractor that cannot run here raises PipelineError saying why."""
    text = config.text_encoder()
    frames = config.frame_extractors(audio, video)
    for ex in frames:
        ok, why = ex.availability()
        if not ok:
            raise PipelineError(f"{ex.kind} extractor {ex.name!r} cannot run here: {why}", stage=ex.kind)
    sets = [text.feature_set(), *(ex.feature_set() for ex in frames)]
    if config.utterance:
        sets.append(text.utterance_set())
        sets += [fs for ex in frames if (fs := ex.utterance_set()) is not None]
    return sets


# --- the units of a media build (typed payloads of WorkUnit) -------------------------------------------------

SetShape = tuple[str, int]  # (feature set name, dims): a declared set a unit fills with zero frames


@dataclass(frozen=True)
class MediaUnit:
    """One media file and all its segments (decoded once). `pictures`: the file may hold pictures (not an
    audio-only suffix); `absent`: word-level sets of the build this unit cannot fill."""

    path: str
    specs: tuple[SegmentSpec, ...]
    pictures: bool = True
    absent: tuple[SetShape, ...] = ()

    @property
    def source_path(self) -> str:
        return self.path


@dataclass(frozen=True)
class TextUnit:
    """A batch of segments without media: words from the transcript only."""

    specs: tuple[SegmentSpec, ...]
    source_path: str | None = None
    absent: tuple[SetShape, ...] = ()


@dataclass(frozen=True)
class RejectedRows:
    """Rows rejected while reading the inputs: they become failure rows of the store."""

    failures: tuple[Failure, ...]
    source_path: str | None = None


MediaPayload = MediaUnit | TextUnit | RejectedRows


def absent_sets(config: VideoConfig, declared: Sequence[FeatureSet], audio: bool, video: bool) -> tuple[SetShape, ...]:
    """The declared word-level frame sets that a unit with (audio, pictures) cannot fill."""
    own = {ex.feature_set().name for ex in config.frame_extractors(audio, video)}
    return tuple((fs.name, fs.dim) for fs in declared
                 if fs.level == "word" and fs.name != config.text_name and fs.name not in own)


# --- processing -------------------------------------------------------------------------------------------

# --- start-up: load the build's models once per process, ahead of the first unit ---------------------------

_WARM_LOCK = threading.Lock()
_WARMING: dict[str, threading.Thread] = {}  # VideoConfig (as JSON) -> the thread loading its models


def warm_up(config: VideoConfig) -> dict[str, float]:
    """Import and load everything a unit of `config` runs (torch, the frame extractors, aligner, Whisper when the
    build may transcribe, the text encoder, the compiled collapse kernels), so the first unit does not pay for it.
    Returns seconds per step. An extractor that fails to load is skipped: the unit that needs it reports why."""
    import time

    seconds: dict[str, float] = {}

    def step(name: str, fn: Any) -> None:
        t = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the unit loads it again and fails with its own error
            log.debug("warm-up %s: %s: %s", name, type(e).__name__, e)
        seconds[name] = round(time.perf_counter() - t, 3)

    step("torch", lambda: _torch_threads(config.threads))
    for ex in config.frame_extractors():
        step(ex.name, ex.load)
    if config.align:
        step("pocketsphinx", config.aligner().load)
    if config.transcribe or config.asr_fallback:
        step("whisper", config.recogniser().load)
    step("text", config.text_encoder().load)
    step("collapse", _warm_collapse)
    log.debug("model warm-up: %s", seconds)
    return seconds


def _warm_collapse() -> None:
    """Run the collapse kernels once: the extension `make install` compiled loads in ~0.003 s; without it,
    numba's first call loads its cache and target (~0.5 s)."""
    from ..collapse import collapse_segment

    frames = FrameFeatures(np.array([0.0, 0.1]), np.array([0.1, 0.2]), np.zeros((2, 2), np.float32),
                           valid=np.array([True, False]))
    words = Words(["a"], np.array([0.0]), np.array([0.2]), np.ones(1, np.float32), "forced")
    collapse_segment(frames, words)
    collapse_segment(replace(frames, valid=None), words)


def start_warm_up(config: VideoConfig) -> bool:
    """Start `warm_up(config)` in a background thread of this process (a build worker as it starts: its models
    load while the client plans the build). The first unit of that configuration waits for it rather than
    loading the same models at the same time. False when one was already started."""
    import json

    key = json.dumps(config.to_dict(), sort_keys=True, default=str)
    with _WARM_LOCK:
        if key in _WARMING:
            return False
        thread = threading.Thread(target=warm_up, args=(config,), name="mmolre-warm-up", daemon=True)
        _WARMING[key] = thread
        thread.start()
    return True


WARM_UP_WAIT_S = 300.0  # a warm-up still running after this long is not waited for: the unit loads what it needs


def _await_warm_up() -> None:
    """Wait for warm-ups started in this process (none: returns at once)."""
    for thread in list(_WARMING.values()):
        if thread is not threading.current_thread() and thread.is_alive():
            thread.join(WARM_UP_WAIT_S)
            if thread.is_alive():
                log.warning("model warm-up still running after %.0f s; the unit loads its models itself", WARM_UP_WAIT_S)


def process_video_unit(unit: WorkUnit, config: VideoConfig) -> UnitResult:
    """Features of one unit; a problem with one segment is a failure of that segment only."""
    p: object = unit.payload
    _await_warm_up()
    if isinstance(p, RejectedRows):
        return UnitResult(failures=list(p.failures), report={"rows_rejected": len(p.failures)})
    if isinstance(p, TextUnit):
        return _process_text(p, config)
    if isinstance(p, MediaUnit):
        return _process_media(p, config)
    raise PipelineError(f"unit {unit.unit_id}: not a media-stage unit ({type(p).__name__})", stage="process",
                        item_id=unit.unit_id)


@dataclass
class _Pending:
    spec: SegmentSpec
    row: dict[str, Any]
    words: Words
    frames: dict[str, FrameFeatures]
    written: list[str]  # what the text encoder reads per word: the word with its punctuation
    utterance: dict[str, np.ndarray] = field(default_factory=dict)  # utterance-level vectors found so far


@dataclass
class _Log:
    """What a unit reports besides its records: failures, counters and per-segment notes."""

    failures: list[Failure] = field(default_factory=list)
    report: Counter[str] = field(default_factory=Counter)
    notes: list[dict[str, str]] = field(default_factory=list)


def _zero_frames(absent: Sequence[SetShape]) -> dict[str, FrameFeatures]:
    return {name: empty_frames(dim) for name, dim in absent}


def _not_english_text(p: _Pending, dim: int, config: VideoConfig, log: _Log) -> WordFeatures:
    """Zero vectors with coverage 0: an English encoder's reading of another language is noise, not features."""
    n = len(p.words.words)
    log.report["text.skipped_not_english"] += 1
    log.notes.append({"item_id": p.spec.segment_id, "stage": "text",
                      "note": f"language {p.spec.language!r}: {config.text_name} (English) not used; its word "
                              "vectors are zero with coverage 0"})
    return WordFeatures(np.zeros((n, dim), np.float32), np.zeros(n, np.float32))


def _finish(pending: list[_Pending], config: VideoConfig, log: _Log) -> UnitResult:
    """Encode every pending English segment's words in one batch and assemble the records."""
    records: list[SegmentRecord] = []
    encoder = config.text_encoder()
    english = [p for p in pending if is_english(p.spec.language)]
    vectors: dict[int, WordFeatures] = {}
    sentences: dict[int, np.ndarray | None] = {}  # pooled sentence vectors (utterance-level), English only
    if english:
        try:
            encoded = encoder.extract([SegmentText(tuple(p.words.words), tuple(p.written)) for p in english])
            vectors = {id(p): enc.features for p, enc in zip(english, encoded, strict=True)}
            sentences = {id(p): enc.sentence for p, enc in zip(english, encoded, strict=True)}
        except PipelineError as e:
            log.failures += [Failure(p.spec.segment_id, "text", str(e), e.source_path) for p in english]
            pending = [p for p in pending if not is_english(p.spec.language)]
    dim = encoder.feature_set().dim
    for p in pending:
        text = vectors[id(p)] if is_english(p.spec.language) else _not_english_text(p, dim, config, log)
        utterance = dict(p.utterance)
        if config.utterance and (sentence := sentences.get(id(p))) is not None:
            utterance[f"{config.text_name}_sentence"] = sentence
        words = replace(p.words, written=list(p.written))  # kept in the store for a fine-tuned text encoder
        records.append(SegmentRecord(p.row, words, p.frames, {config.text_name: text}, utterance))
        log.report[f"words.{p.words.method}"] += len(p.words.words)
        log.report[f"segments.{p.words.method}"] += 1
    log.report["segments_built"] += len(records)
    log.report["segments_failed"] += len(log.failures)
    return UnitResult(records, log.failures, dict(log.report), log.notes)


def _process_text(unit: TextUnit, config: VideoConfig) -> UnitResult:
    pending: list[_Pending] = []
    log = _Log()
    for s in unit.specs:
        words = transcript_words(s.transcript)
        if not words:
            log.failures.append(Failure(s.segment_id, "read", f"{s.source_path}: segment {s.segment_id} has no media "
                                        "and an empty transcript: no words to build", s.source_path))
            continue
        if not is_english(s.language):
            log.failures.append(Failure(s.segment_id, "text", f"{s.source_path}: segment {s.segment_id} has no media "
                                        f"and language {s.language!r}: the text encoder {config.text_name} reads "
                                        "English only, so there is nothing to build", s.source_path))
            log.report[f"segments.language.{s.language}"] += 1
            continue
        pending.append(_Pending(s, s.segment_row(), Words.untimed(words), _zero_frames(unit.absent),
                                written_words(s.transcript)))
    log.report["text_only_segments"] += len(pending)
    return _finish(pending, config, log)


def _align_note(s: SegmentSpec, method: str, code: str, note: str, log: _Log) -> None:
    """Count a fallback by its reason and keep the reason for the segment (the store keeps only the method)."""
    log.report[f"align_fallback.{method}.{code or 'unknown'}"] += 1
    if not is_english(s.language):
        log.report[f"segments.language.{s.language}"] += 1
    log.notes.append({"item_id": s.segment_id, "stage": "align", "note": f"{method}: {note or code}"})


@dataclass(frozen=True)
class _Decoded:
    """A media file decoded once for all its segments."""

    path: Path
    audio: np.ndarray | None
    audio_problem: str
    has_video: bool
    end: float  # the media's end: the longer of the container's duration and the decoded audio


def _decode(path: Path, log: _Log) -> _Decoded:
    """Probe and read the file's audio (PyAV imported here, first use); counters for what is missing."""
    from ..media import SAMPLE_RATE, probe, read_audio

    info = probe(path)
    audio: np.ndarray | None = None
    audio_problem = ""
    if info.has_audio:
        try:
            audio = read_audio(path)
        except PipelineError as e:
            audio_problem = str(e)
            log.report["videos_audio_undecodable"] += 1
    else:
        log.report["videos_without_audio"] += 1
    if not info.has_video:
        log.report["files_without_video"] += 1
    decoded_end = len(audio) / SAMPLE_RATE if audio is not None else None
    media_end = max(x for x in (info.duration, decoded_end, 0.0) if x is not None)
    if audio is not None and info.duration and decoded_end is not None and decoded_end < info.duration - 0.5:
        log.report["videos_audio_shorter_than_container"] += 1
    return _Decoded(path, audio, audio_problem, info.has_video, media_end)


def _segment_media(s: SegmentSpec, media: _Decoded, log: _Log) -> SegmentMedia:
    """The segment's span (clipped to the media's end) and its audio."""
    from ..media import cut

    start = s.start if s.start is not None else 0.0
    end = s.end if s.end is not None else media.end
    if start >= media.end:
        raise PipelineError(f"{media.path}: segment {s.segment_id} starts at {start:.2f} s, at or after the end of "
                            f"the media ({media.end:.2f} s)", stage="read")
    if end > media.end + 0.05:
        log.report["segments_clipped_to_media_end"] += 1
        end = media.end
    audio = cut(media.audio, start, end) if media.audio is not None else None
    return SegmentMedia(s.segment_id, start, end, media.path, audio, media.has_video,
                        tuple(transcript_words(s.transcript)), s.language)


def _words(s: SegmentSpec, seg: SegmentMedia, media: _Decoded, config: VideoConfig, log: _Log) -> tuple[Words, str | None]:
    """The segment's timed words and its transcript (Whisper's text when there was none)."""
    if seg.words:  # align off: align_config() has neither forced alignment nor the ASR fallback
        al = config.aligner().extract(seg)
        for k, v in al.report.items():
            log.report[f"align.{k}"] += v
        if al.words.method in ("asr", "uniform"):
            _align_note(s, al.words.method, al.fallback, al.note, log)
        return al.words, s.transcript
    if config.transcribe and seg.audio is not None and len(seg.audio):
        tr = config.recogniser().extract(seg)
        log.report["segments_transcribed"] += 1
        if not tr.words.words:
            raise PipelineError(f"{media.path}: segment {s.segment_id} has no transcript and Whisper recognised no "
                                "speech: no words to build", stage="align")
        return tr.words, tr.text
    why = ("transcription is off" if not config.transcribe else
           f"the file has no usable audio{': ' + media.audio_problem if media.audio_problem else ''}")
    raise PipelineError(f"{media.path}: segment {s.segment_id} has no transcript and {why}: no words to build",
                        stage="align")


def _torch_threads(threads: int | None) -> None:
    """Import torch and set its intra-op threads, before a torch model (the face backends' networks) runs."""
    import torch

    if threads:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class _Run:
    """A frame extractor of the unit with the names of the sets it fills (asked once per unit)."""

    extractor: FrameExtractor
    set_name: str
    utterance_name: str | None  # its utterance-level set, None when it has none or the build writes none


def _runs(extractors: Sequence[FrameExtractor], config: VideoConfig) -> list[_Run]:
    out = []
    for ex in extractors:
        companion = ex.utterance_set() if config.utterance else None
        out.append(_Run(ex, ex.feature_set().name, companion.name if companion is not None else None))
    return out


def _one_segment(s: SegmentSpec, media: _Decoded, runs: Sequence[_Run], unit: MediaUnit,
                 config: VideoConfig, log: _Log) -> _Pending:
    stage = "read"
    try:
        seg = _segment_media(s, media, log)
        stage = "align"
        words, transcript = _words(s, seg, media, config, log)
        frames = _zero_frames(unit.absent)
        utterance: dict[str, np.ndarray] = {}
        for run in runs:  # audio, then face: the stage a failure is counted under is the extractor's kind
            stage = run.extractor.kind
            if run.utterance_name is None:
                frames[run.set_name] = run.extractor.extract(seg)
                continue
            frames[run.set_name], vector = run.extractor.extract_with_utterance(seg)
            if vector is not None:
                utterance[run.utterance_name] = vector
        return _Pending(s, s.segment_row(seg.start, seg.end, transcript), words, frames,
                        written_words(transcript, words.words), utterance)
    except PipelineError as e:
        raise _SegmentFailed(Failure(s.segment_id, e.stage or stage, str(e), e.source_path or str(media.path))) from e
    except Exception as e:  # noqa: BLE001 - a library's own error on one segment must not stop the others
        raise _SegmentFailed(Failure(s.segment_id, stage, f"{media.path}: segment {s.segment_id}: "
                                     f"{type(e).__name__}: {e}", str(media.path))) from e


class _SegmentFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def unreadable_unit(unit: MediaUnit, stage: str, reason: str, source_path: str) -> UnitResult:
    """A unit whose media cannot be read: every segment fails with the same reason."""
    return UnitResult([], [Failure(s.segment_id, stage, reason, source_path) for s in unit.specs],
                      {"segments_failed": len(unit.specs), "videos_unreadable": 1})


def _process_media(unit: MediaUnit, config: VideoConfig) -> UnitResult:
    path = Path(unit.path)
    log = _Log()
    try:
        media = _decode(path, log)
    except PipelineError as e:
        return unreadable_unit(unit, e.stage, str(e), str(path))
    runs = _runs(config.frame_extractors(audio=True, video=unit.pictures), config)
    if any(r.extractor.kind == "face" for r in runs) and media.has_video:
        _torch_threads(config.threads)
    pending: list[_Pending] = []
    for s in unit.specs:
        try:
            pending.append(_one_segment(s, media, runs, unit, config, log))
        except _SegmentFailed as f:
            log.failures.append(f.failure)
    _finish_video(runs, pending)
    log.report["video_ms"] += int(round(media.end * 1000))
    return _finish(pending, config, log)


def _finish_video(runs: Sequence[_Run], pending: list[_Pending]) -> None:
    """Each extractor sees all of the file's segments once they are extracted (features relative to the whole
    video, e.g. the mediapipe face set's rel_* cues)."""
    for run in runs:
        have = [p for p in pending if run.set_name in p.frames]
        done = run.extractor.finish_video([(p.frames[run.set_name], p.utterance.get(run.utterance_name or ""))
                                           for p in have])
        for p, (frames, vector) in zip(have, done, strict=True):
            p.frames[run.set_name] = frames
            if run.utterance_name is not None and vector is not None:
                p.utterance[run.utterance_name] = vector
