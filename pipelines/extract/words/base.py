"""The two words extractors: an aligner times a segment's transcript, a recogniser finds the words in its audio.

Both make words, not features (no feature set). The media stage picks them by name (`--aligner`, `--asr`) and
hands the build's recogniser to the aligner for its fallback, so neither names the other.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...errors import PipelineError
from ...records import Words
from ..base import Extractor, SegmentMedia


@dataclass
class Transcription:
    """Recognised words with their times, the recogniser's text, and the language it heard (with its
    probability; "" and None when the recogniser was told the language)."""

    words: Words
    text: str
    language: str = ""
    language_probability: float | None = None


@dataclass
class Alignment:
    words: Words
    report: dict[str, int]  # pronunciation sources and fallbacks used
    note: str = ""  # why a fallback was taken
    fallback: str = ""  # why, as a short code for counting: forced_failed, too_long, asr_no_match, no_audio, ...
    language: str = ""  # what the recogniser heard ("" when it was told, or did not run)
    language_probability: float | None = None


class Recogniser(Extractor[SegmentMedia, Transcription]):
    """Speech recognition with word times. `languages`: the languages it recognises ("*": any, detected)."""

    languages: ClassVar[tuple[str, ...]] = ("en",)
    title: ClassVar[str] = "the recogniser"  # how messages name it

    def feature_set(self) -> None:
        return None

    @abstractmethod
    def recognise(self, samples: np.ndarray, offset: float = 0.0, language: str | None = None) -> Transcription:
        """The words in `samples` (16 kHz mono, sample 0 at `offset` seconds); `language` None: detect it."""

    def extract(self, media: SegmentMedia) -> Transcription:
        if media.audio is None or not len(media.audio):
            raise PipelineError(f"segment {media.segment_id}: no audio to transcribe", stage="align",
                                item_id=media.segment_id)
        return self.recognise(media.audio, media.start, media.language)


class Aligner(Extractor[SegmentMedia, Alignment]):
    """Times for a segment's transcript words; `recogniser` (when given) is its fallback."""

    def feature_set(self) -> None:
        return None

    @abstractmethod
    def align(self, media: SegmentMedia, recogniser: Recogniser | None = None) -> Alignment:
        """The transcript's words (`media.words`) with times in seconds of the source file."""

    def extract(self, media: SegmentMedia) -> Alignment:
        return self.align(media)
