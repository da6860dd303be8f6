"""A media file decoded once for all its segments, and each segment's span and audio cut from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PipelineError
from ..extract.base import SegmentMedia
from ..extract.words.normalise import transcript_words
from ..inputs import SegmentSpec
from .unit_log import UnitLog


@dataclass(frozen=True)
class Decoded:
    """A media file decoded once for all its segments."""

    path: Path
    audio: np.ndarray | None
    audio_problem: str
    has_video: bool
    end: float  # the media's end: the longer of the container's duration and the decoded audio


def decode(path: Path, log: UnitLog) -> Decoded:
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
    return Decoded(path, audio, audio_problem, info.has_video, media_end)


def segment_media(s: SegmentSpec, media: Decoded, log: UnitLog) -> SegmentMedia:
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
