"""A segment's timed words and its language.

English (the row's `language`, `en` by default): the build's aligner times the transcript (`--aligner`,
pocketsphinx forced alignment) with the English recogniser (`--asr`, Whisper tiny.en) as its fallback, and
without a transcript that recogniser finds the words. Any other language, or `und` (undetermined): the
multilingual recogniser (`--asr-multilingual`, Whisper base) hears the words and, with `und`, the language; a
given transcript is aligned text to text with what it heard (`--aligner-multilingual`). The segment's language
is the detected one when the recogniser detected it, else the row's. Every fallback is counted and noted.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PipelineError
from ..extract.base import SegmentMedia
from ..extract.words.normalise import is_english
from ..inputs import SegmentSpec
from ..records import Words
from .decode import Decoded
from .unit_log import UnitLog
from .video_config import VideoConfig


@dataclass(frozen=True)
class SegmentWords:
    words: Words
    transcript: str | None  # the given one, or the recogniser's text
    language: str  # the row's, or the detected one
    language_probability: float | None = None  # of the detected language; None when given


def align_note(s: SegmentSpec, method: str, code: str, note: str, log: UnitLog) -> None:
    """Count a fallback by its reason and keep the reason for the segment (the store keeps only the method)."""
    log.report[f"align_fallback.{method}.{code or 'unknown'}"] += 1
    log.notes.append({"item_id": s.segment_id, "stage": "align", "note": f"{method}: {note or code}"})


def _language(given: str, heard: str, probability: float | None) -> str:
    """The detected language when the recogniser detected one, else the row's."""
    return heard if probability is not None and heard else given


def timed_words(s: SegmentSpec, seg: SegmentMedia, media: Decoded, config: VideoConfig, log: UnitLog) -> SegmentWords:
    """The segment's timed words, its transcript (the recogniser's text when there was none) and language."""
    other = not is_english(s.language)  # another language, or "und"
    if seg.words:  # align off: the aligner has neither forced alignment nor the recogniser's fallback
        al = config.aligner_extractor(other).align(seg, config.recogniser(other))
        for k, v in al.report.items():
            log.report[f"align.{k}"] += v
        if al.words.method == "uniform" or (al.words.method == "asr" and not other):
            align_note(s, al.words.method, al.fallback, al.note, log)
        language = _language(s.language, al.language, al.language_probability)
        if other:
            log.report[f"segments.language.{language}"] += 1
        return SegmentWords(al.words, s.transcript, language, al.language_probability)
    if config.transcribe and seg.audio is not None and len(seg.audio):
        recogniser = config.recogniser(other)
        tr = recogniser.extract(seg)
        log.report["segments_transcribed"] += 1
        if not tr.words.words:
            raise PipelineError(f"{media.path}: segment {s.segment_id} has no transcript and {recogniser.title} "
                                "recognised no speech: no words to build", stage="align")
        language = _language(s.language, tr.language, tr.language_probability)
        if other:
            log.report[f"segments.language.{language}"] += 1
        return SegmentWords(tr.words, tr.text, language, tr.language_probability)
    why = ("transcription is off" if not config.transcribe else
           f"the file has no usable audio{': ' + media.audio_problem if media.audio_problem else ''}")
    raise PipelineError(f"{media.path}: segment {s.segment_id} has no transcript and {why}: no words to build",
                        stage="align")
