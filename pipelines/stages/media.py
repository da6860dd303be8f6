"""The media stage: one unit of media (a video or audio file with its segments, all the files of one speaker, or
a batch of text-only segments) -> segment records, through the extractor interface (pipelines/extract).

Per segment of a media file: its words (words.py: the build's aligner times the transcript, its recogniser
finds the words when there is none), then one loop over the unit's frame extractors (the audio extractor, the
face backend when the file can hold pictures), each giving the segment's frames and its utterance-level
vector; at the end the text encoder reads all of the unit's segments in one batch. A unit runs only the
extractors its media can feed; a build-declared set the unit cannot fill (no audio, no pictures, no media) gets
zero frames, so its words have coverage 0 there. A segment whose `language` is not English (or `und`) is heard
by the multilingual recogniser (words.py) and its row keeps its language (schema 2.2); the English text encoder
skips it (text coverage 0), and the build report's notes and counters say so, as they do for every alignment
fallback.

The build's settings and extractors are in video_config.py, its units in media_units.py, the workers' start-up
in warm_up.py; this module re-exports what the recipe and the flows use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PipelineError
from ..extract.base import FrameExtractor, empty_frames
from ..extract.text import SegmentText
from ..extract.words.normalise import transcript_words, written_words
from ..inputs import SegmentSpec
from ..records import Failure, FrameFeatures, SegmentRecord, UnitResult, WordFeatures, Words, WorkUnit
from .decode import Decoded, decode, segment_media
from .media_units import MediaPayload, MediaUnit, RejectedRows, SetShape, SpeakerUnit, TextUnit, absent_sets
from .unit_log import UnitLog
from .video_config import VideoConfig, feature_sets_for
from .warm_up import await_warm_up, start_warm_up, torch_threads, warm_up
from .words import timed_words

__all__ = ["MediaPayload", "MediaUnit", "RejectedRows", "SpeakerUnit", "TextUnit", "VideoConfig", "absent_sets", "feature_sets_for",
           "process_video_unit", "start_warm_up", "unreadable_unit", "warm_up"]


def process_video_unit(unit: WorkUnit, config: VideoConfig) -> UnitResult:
    """Features of one unit; a problem with one segment is a failure of that segment only."""
    p: object = unit.payload
    await_warm_up()
    if isinstance(p, RejectedRows):
        return UnitResult(failures=list(p.failures), report={"rows_rejected": len(p.failures)})
    if isinstance(p, TextUnit):
        return _process_text(p, config)
    if isinstance(p, MediaUnit | SpeakerUnit):
        return _process_media(p.files if isinstance(p, SpeakerUnit) else (p,), config)
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

    @property
    def language(self) -> str:
        return str(self.row["language"])


def _row(s: SegmentSpec, language: str, probability: float | None, start: float | None = None,
         end: float | None = None, transcript: str | None = None) -> dict[str, Any]:
    """The segments-table row with the segment's language (schema 2.2): the row's, or the detected one with
    its probability."""
    return {**s.segment_row(start, end, transcript), "language": language, "language_probability": probability}


def _zero_frames(absent: Sequence[SetShape]) -> dict[str, FrameFeatures]:
    return {name: empty_frames(dim) for name, dim in absent}


def _not_english_text(p: _Pending, dim: int, config: VideoConfig, log: UnitLog) -> WordFeatures:
    """Zero vectors with coverage 0: an English encoder's reading of another language is noise, not features."""
    n = len(p.words.words)
    log.report["text.skipped_not_english"] += 1
    log.notes.append({"item_id": p.spec.segment_id, "stage": "text",
                      "note": f"language {p.language!r}: {config.text_name} ({config.text_languages_read()}) not used; "
                              "its word vectors are zero with coverage 0"})
    return WordFeatures(np.zeros((n, dim), np.float32), np.zeros(n, np.float32))


def _finish(pending: list[_Pending], config: VideoConfig, log: UnitLog) -> UnitResult:
    """Encode the words of every pending segment in a language the encoder reads (`text_languages`: English by
    default) in one batch and assemble the records."""
    records: list[SegmentRecord] = []
    encoder = config.text_encoder()
    english = [p for p in pending if config.text_reads(p.language)]
    vectors: dict[int, WordFeatures] = {}
    sentences: dict[int, np.ndarray | None] = {}  # pooled sentence vectors (utterance-level), English only
    if english:
        try:
            encoded = encoder.extract([SegmentText(tuple(p.words.words), tuple(p.written)) for p in english])
            vectors = {id(p): enc.features for p, enc in zip(english, encoded, strict=True)}
            sentences = {id(p): enc.sentence for p, enc in zip(english, encoded, strict=True)}
        except PipelineError as e:
            log.failures += [Failure(p.spec.segment_id, "text", str(e), e.source_path) for p in english]
            pending = [p for p in pending if not config.text_reads(p.language)]
    dim = encoder.feature_set().dim
    for p in pending:
        text = vectors[id(p)] if config.text_reads(p.language) else _not_english_text(p, dim, config, log)
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
    log = UnitLog()
    for s in unit.specs:
        words = transcript_words(s.transcript)
        if not words:
            log.failures.append(Failure(s.segment_id, "read", f"{s.source_path}: segment {s.segment_id} has no media "
                                        "and an empty transcript: no words to build", s.source_path))
            continue
        if not config.text_reads(s.language):
            log.failures.append(Failure(s.segment_id, "text", f"{s.source_path}: segment {s.segment_id} has no media "
                                        f"and language {s.language!r}: the text encoder {config.text_name} reads "
                                        f"{config.text_languages_read()} only, so there is nothing to build",
                                        s.source_path))
            log.report[f"segments.language.{s.language}"] += 1
            continue
        pending.append(_Pending(s, _row(s, s.language, None), Words.untimed(words), _zero_frames(unit.absent),
                                written_words(s.transcript)))
    log.report["text_only_segments"] += len(pending)
    return _finish(pending, config, log)


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


def _one_segment(s: SegmentSpec, media: Decoded, runs: Sequence[_Run], unit: MediaUnit,
                 config: VideoConfig, log: UnitLog) -> _Pending:
    stage = "read"
    try:
        seg = segment_media(s, media, log)
        stage = "align"
        timed = timed_words(s, seg, media, config, log)
        words, transcript = timed.words, timed.transcript
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
        return _Pending(s, _row(s, timed.language, timed.language_probability, seg.start, seg.end, transcript),
                        words, frames,
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


def _process_media(files: Sequence[MediaUnit], config: VideoConfig) -> UnitResult:
    """One media file, or all of one speaker's: every file's segments are extracted before `_finish_video` sees
    them together (the baseline of relative features is the file's, or the speaker's)."""
    log = UnitLog()
    pending: list[_Pending] = []
    runs: dict[str, _Run] = {}  # by set name: a speaker's audio files and videos run different extractors
    unreadable = []
    for unit in files:
        try:
            media = decode(Path(unit.path), log)
        except PipelineError as e:
            unreadable.append(unreadable_unit(unit, e.stage, str(e), unit.path))
            continue
        file_runs = _runs(config.frame_extractors(audio=True, video=unit.pictures), config)
        runs.update((r.set_name, r) for r in file_runs)
        if any(r.extractor.kind == "face" for r in file_runs) and media.has_video:
            torch_threads(config.threads)
        for s in unit.specs:
            try:
                pending.append(_one_segment(s, media, file_runs, unit, config, log))
            except _SegmentFailed as f:
                log.failures.append(f.failure)
        log.report["video_ms"] += int(round(media.end * 1000))
    if len(unreadable) == len(files):
        return unreadable[0] if len(files) == 1 else _merged(unreadable)
    _finish_video(list(runs.values()), pending)
    for u in unreadable:
        log.failures += u.failures
        log.report["videos_unreadable"] += 1
    return _finish(pending, config, log)


def _merged(results: Sequence[UnitResult]) -> UnitResult:
    return UnitResult([], [f for r in results for f in r.failures],
                      {"segments_failed": sum(len(r.failures) for r in results), "videos_unreadable": len(results)})


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
