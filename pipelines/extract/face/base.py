"""The face-feature interface: a face backend is a frame extractor of kind "face" that decodes its own frames.

A backend is a small class with a `name`, a frozen configuration dataclass (its settings travel into the
feature set's provenance), `feature_set()` (what each dimension means) and `extract_video()`. Callers pick one
by name through the extractor registry (`get_backend("mediapipe")`), so MediaPipe, dlib, py-feat and imported
OpenFace output are interchangeable in a build.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

import feature_schemas

from ...records import FrameFeatures
from .. import registry
from ..base import FrameExtractor, Kind, SegmentMedia, empty_frames
from .summary import summarise_frames, summary_feature_set

STAGE = "face"
DEFAULT_BACKEND = "mediapipe"


class FaceBackend(FrameExtractor):
    """Frame-level face features of a video.

    `extract_video` returns one frame per interval [t, t + 1/fps) in seconds of the source video; `valid` says a
    face was found (values of invalid frames are 0 and must be masked), `confidence` is the detection score
    mapped to [0, 1]. Models are loaded once per process, on first use, and shared by all instances with the
    same settings; an instance holds only its configuration, so it pickles cheaply to worker processes."""

    kind: ClassVar[Kind] = "face"

    @property
    def fps(self) -> float:
        return float(self.config.fps)

    @abstractmethod
    def feature_set(self) -> feature_schemas.FeatureSet:
        """Name, dimension names and provenance of what `extract_video` returns."""

    @abstractmethod
    def extract_video(
        self, video_path: str | os.PathLike[str], start: float | None = None, end: float | None = None,
        fps: float | None = None,
    ) -> FrameFeatures:
        """Features of [start, end) of the video (whole video when None) at `fps` (the config's when None)."""

    def extract(self, media: SegmentMedia) -> FrameFeatures:
        """The segment's face frames; none at all when its file has no pictures."""
        if media.path is None or not media.has_video:
            return empty_frames(self.feature_set().dim)
        return self.extract_video(media.path, media.start, media.end, self.fps)

    def utterance_set(self) -> feature_schemas.FeatureSet:
        return summary_feature_set(self.feature_set())

    def utterance(self, media: SegmentMedia, frames: FrameFeatures) -> np.ndarray | None:
        return summarise_frames(frames)


def available_backends() -> list[str]:
    return registry.names("face")


def get_backend(name: str = DEFAULT_BACKEND, **config: Any) -> FaceBackend:
    """The backend called `name` ("mediapipe", "dlib", "pyfeat", "openface") with the given settings; one instance
    per process and settings, its models loaded. Raises PipelineError(stage="face") for unknown names or
    settings and for backends that cannot run here (the message says what is missing)."""
    backend = registry.get(name, "face", **config)
    assert isinstance(backend, FaceBackend)
    backend.load()
    return backend


def invalid_frames(start: Any, end: Any, dim: int) -> FrameFeatures:
    """Frames with no usable face: values 0, valid False, confidence 0."""
    n = len(start)
    return FrameFeatures(start, end, np.zeros((n, dim), np.float32), np.zeros(n, bool), np.zeros(n, np.float32))
