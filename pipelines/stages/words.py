"""A segment's timed words: the build's aligner times its transcript (with the build's recogniser as the
fallback); without a transcript the recogniser finds the words. Every fallback is counted and noted."""

from __future__ import annotations

from ..errors import PipelineError
from ..extract.base import SegmentMedia
from ..extract.words.normalise import is_english
from ..inputs import SegmentSpec
from ..records import Words
from .decode import Decoded
from .unit_log import UnitLog
from .video_config import VideoConfig


def align_note(s: SegmentSpec, method: str, code: str, note: str, log: UnitLog) -> None:
    """Count a fallback by its reason and keep the reason for the segment (the store keeps only the method)."""
    log.report[f"align_fallback.{method}.{code or 'unknown'}"] += 1
    if not is_english(s.language):
        log.report[f"segments.language.{s.language}"] += 1
    log.notes.append({"item_id": s.segment_id, "stage": "align", "note": f"{method}: {note or code}"})


def timed_words(s: SegmentSpec, seg: SegmentMedia, media: Decoded, config: VideoConfig,
                log: UnitLog) -> tuple[Words, str | None]:
    """The segment's timed words and its transcript (the recogniser's text when there was none)."""
    if seg.words:  # align off: the aligner has neither forced alignment nor the recogniser's fallback
        al = config.aligner_extractor().align(seg, config.recogniser())
        for k, v in al.report.items():
            log.report[f"align.{k}"] += v
        if al.words.method in ("asr", "uniform"):
            align_note(s, al.words.method, al.fallback, al.note, log)
        return al.words, s.transcript
    if config.transcribe and seg.audio is not None and len(seg.audio):
        recogniser = config.recogniser()
        tr = recogniser.extract(seg)
        log.report["segments_transcribed"] += 1
        if not tr.words.words:
            raise PipelineError(f"{media.path}: segment {s.segment_id} has no transcript and {recogniser.title} "
                                "recognised no speech: no words to build", stage="align")
        return tr.words, tr.text
    why = ("transcription is off" if not config.transcribe else
           f"the file has no usable audio{': ' + media.audio_problem if media.audio_problem else ''}")
    raise PipelineError(f"{media.path}: segment {s.segment_id} has no transcript and {why}: no words to build",
                        stage="align")
