"""Word times for a transcript in any language: the recogniser's timed words matched to the transcript's.

There is no forced aligner for most languages here, so a given transcript is aligned text to text with what a
multilingual recogniser heard (`align.times_from_recognised`: matched words take the recognised word's times,
the others share the gaps between them). Uniform spacing is the last resort and always says why: no audio, or
no word of the transcript among the recognised ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import PipelineError
from ...media import SAMPLE_RATE
from ...records import Words
from ..base import SegmentMedia
from ..registry import register
from .align import AlignConfig, align_transcript, speech_region, spread, times_from_recognised
from .base import Aligner, Alignment, Recogniser


@dataclass(frozen=True)
class MatchConfig:
    """No settings yet: the recogniser (`--asr-multilingual`) decides what is heard."""


@register("aligner", "recognised", default="multilingual")
class RecognisedAligner(Aligner):
    """Any language: the transcript aligned text to text with the multilingual recogniser's timed words."""

    config_class = MatchConfig

    def version(self) -> str:
        return "1"

    def align(self, media: SegmentMedia, recogniser: Recogniser | None = None) -> Alignment:
        words = list(media.words)
        if recogniser is None:
            raise PipelineError(f"segment {media.segment_id}: the {self.name!r} aligner needs a recogniser",
                                stage="align", item_id=media.segment_id)
        audio = media.audio
        if not words or audio is None or len(audio) < SAMPLE_RATE // 10:  # nothing to hear: align_transcript says so
            return align_transcript(audio, words, media.start, AlignConfig(forced=False, asr_fallback=False),
                                    duration=media.end - media.start, language=media.language)
        heard = recogniser.recognise(audio, 0.0, None if media.language == "und" else media.language)
        got = times_from_recognised(words, heard.words, audio)
        report = {"recognised_words": len(heard.words.words)}
        if got is not None:
            start, end, conf = got
            report["recognised_matched"] = int((conf > 0).sum())
            return Alignment(Words(words, start + media.start, end + media.start, conf, "asr"), report,
                             language=heard.language, language_probability=heard.language_probability)
        t0, t1 = speech_region(audio)
        start, end = spread(words, t0, t1)
        return Alignment(Words(words, start + media.start, end + media.start, np.zeros(len(words)), "uniform"),
                         report, f"{recogniser.title} matched none of {len(words)} words (it heard "
                         f"{heard.text[:80]!r})", "asr_no_match", heard.language, heard.language_probability)
