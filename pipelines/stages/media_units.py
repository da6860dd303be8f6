"""The units of a media build: the typed payloads of WorkUnit that the video recipe plans and the media stage runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from feature_schemas import FeatureSet

from ..inputs import SegmentSpec
from ..records import Failure
from .video_config import VideoConfig

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
class SpeakerUnit:
    """All media files of one speaker (a manifest's `speaker`), each with that speaker's segments in it: built
    together so that features relative to the speaker (the face set's rel_* cues) see every file first."""

    speaker: str
    files: tuple[MediaUnit, ...]

    @property
    def source_path(self) -> str:
        return self.files[0].path


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


MediaPayload = MediaUnit | SpeakerUnit | TextUnit | RejectedRows


def absent_sets(config: VideoConfig, declared: Sequence[FeatureSet], audio: bool, video: bool) -> tuple[SetShape, ...]:
    """The declared word-level frame sets that a unit with (audio, pictures) cannot fill."""
    own = {ex.feature_set().name for ex in config.frame_extractors(audio, video)}
    return tuple((fs.name, fs.dim) for fs in declared
                 if fs.level == "word" and fs.name != config.text_name and fs.name not in own)
