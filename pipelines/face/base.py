"""The face-feature interface and a registry of backends by name.

A backend is a small class with a `name`, a frozen configuration dataclass (its settings travel into the
feature set's provenance), `feature_set()` (what each dimension means) and `extract()`. Callers pick one by
name (`get_backend("mediapipe")`), so MediaPipe, dlib, py-feat and imported OpenFace output are interchangeable
in a recipe.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

import feature_schemas

from ..errors import PipelineError
from ..records import FrameFeatures

STAGE = "face"
DEFAULT_BACKEND = "mediapipe"

# Built-in backends are imported on first use, so asking for "openface" never loads dlib or torch.
_BUILTIN: dict[str, str] = {
    "dlib": "pipelines.face.dlib_backend:DlibBackend",
    "pyfeat": "pipelines.face.pyfeat_backend:PyFeatBackend",
    "openface": "pipelines.face.openface_csv:OpenFaceCsvBackend",
    "mediapipe": "pipelines.face.mediapipe_backend:MediaPipeBackend",
}
_REGISTRY: dict[str, type[FaceBackend]] = {}


class FaceBackend(ABC):
    """Frame-level face features of a video.

    `extract` returns one frame per interval [t, t + 1/fps) in seconds of the source video; `valid` says a face
    was found (values of invalid frames are 0 and must be masked), `confidence` is the detection score mapped to
    [0, 1]. Models are loaded once per process and shared by all instances with the same settings; an instance
    holds only its configuration, so it pickles cheaply to worker processes."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any = None) -> None:
        self.config = self.config_class() if config is None else config

    @property
    def fps(self) -> float:
        return float(self.config.fps)

    @abstractmethod
    def feature_set(self) -> feature_schemas.FeatureSet:
        """Name, dimension names and provenance of what `extract` returns."""

    @abstractmethod
    def extract(
        self, video_path: str | os.PathLike[str], start: float | None = None, end: float | None = None,
        fps: float | None = None,
    ) -> FrameFeatures:
        """Features of [start, end) of the video (whole video when None) at `fps` (the config's when None)."""

    def config_dict(self) -> dict[str, Any]:
        """The configuration as JSON-friendly values, for provenance."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.config).items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def register_backend(cls: type[FaceBackend]) -> type[FaceBackend]:
    """Class decorator: make a backend available to `get_backend` under its `name`."""
    _REGISTRY[cls.name] = cls
    return cls


def available_backends() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def backend_class(name: str) -> type[FaceBackend]:
    if name not in _REGISTRY and name in _BUILTIN:
        module, attr = _BUILTIN[name].split(":")
        _REGISTRY[name] = getattr(importlib.import_module(module), attr)
    if name not in _REGISTRY:
        raise PipelineError(f"unknown face backend {name!r}; choose one of {available_backends()}", stage=STAGE)
    return _REGISTRY[name]


def make_config(cls: type[FaceBackend], **config: Any) -> Any:
    """Build `cls`'s config dataclass from keyword settings, naming any unknown ones."""
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise PipelineError(f"face backend {cls.name!r}: unknown settings {unknown}; known: {sorted(fields)}", stage=STAGE)
    return cls.config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


@functools.lru_cache(maxsize=32)
def _cached_backend(name: str, config: Any) -> FaceBackend:
    return backend_class(name)(config)


def get_backend(name: str = DEFAULT_BACKEND, **config: Any) -> FaceBackend:
    """The backend called `name` ("mediapipe", "dlib", "pyfeat", "openface") with the given settings; one instance per
    process and settings, so models load once. Raises PipelineError(stage="face") for unknown names or settings
    and for backends that cannot run here (the message says what is missing)."""
    cls = backend_class(name)
    return _cached_backend(name, make_config(cls, **config))


def invalid_frames(start: Any, end: Any, dim: int) -> FrameFeatures:
    """Frames with no usable face: values 0, valid False, confidence 0."""
    n = len(start)
    return FrameFeatures(start, end, np.zeros((n, dim), np.float32), np.zeros(n, bool), np.zeros(n, np.float32))
