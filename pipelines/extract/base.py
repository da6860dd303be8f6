"""The extractor interface: every feature or word extractor of the media stage is one small class.

Modelled on lhotse's FeatureExtractor: a `name` (as the command line spells it), a `kind`, a frozen config
dataclass (its settings travel into the feature set's provenance and the manifest), `feature_set()` (what each
dimension means) and one `extract()`. `availability()` says whether the extractor can run here, cheaply (a
package import check, weight files on disk; never a model load), so `mmolre extractors` can list them all.

Kinds and what `extract` reads and returns:
- "audio", "face": one segment's `SegmentMedia` -> `FrameFeatures` (frames in seconds of the source file);
  `utterance()` adds the segment's utterance-level vector (openSMILE functionals, the face summary).
- "text": a batch of segments' words as written -> one `EncodedWords` per segment (word vectors).
- "aligner": one segment's `SegmentMedia` -> its transcript's words with times (forced alignment);
- "asr": one segment's `SegmentMedia` -> the words recognised in its audio, with times (words/base.py).
Extractors hold only their configuration, so they pickle cheaply to worker processes; models load once per
process on first use.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

from feature_schemas import FeatureSet

from ..errors import PipelineError
from ..records import FrameFeatures

Kind = Literal["audio", "face", "text", "aligner", "asr"]
KINDS: tuple[Kind, ...] = ("audio", "face", "text", "aligner", "asr")

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class SegmentMedia:
    """One segment's media as extractors read it. `audio`: the segment's 16 kHz mono samples, sample 0 at
    `start` (None: no usable audio); `path`: the media file, which face backends decode themselves;
    `words`: the transcript's words (what an aligner times); times are seconds of the source file."""

    segment_id: str
    start: float
    end: float
    path: Path | None = None
    audio: np.ndarray | None = field(default=None, compare=False)
    has_video: bool = False
    words: tuple[str, ...] = ()
    language: str = "en"


class Extractor(ABC, Generic[In, Out]):
    """Name, kind, configuration and one `extract`; see the module docstring. `name` and `kind` are set by the
    registry's `@register(kind, name)` decorator."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    config_class: ClassVar[type]
    defaults: ClassVar[dict[str, Any]] = {}  # settings the registry applies before the caller's

    def __init__(self, config: Any = None) -> None:
        self.config = self.config_class() if config is None else config

    @abstractmethod
    def feature_set(self) -> FeatureSet | None:
        """Name, dimension names, version and frame rate of what `extract` returns (None: words, no features)."""

    @abstractmethod
    def extract(self, media: In) -> Out:
        """The features (or words) of one segment's media, or of a batch for the text encoder."""

    def availability(self) -> tuple[bool, str]:
        """(can it run here, why not): cheap, never loads a model."""
        return True, ""

    def load(self) -> None:
        """Load the models now (once per process), so a missing or broken one fails here rather than on the
        first segment; `extract` loads them on first use anyway."""

    def version(self) -> str:
        """The version of the software that computes the features (the feature set's, by default)."""
        fs = self.feature_set()
        return fs.extractor_version if fs is not None else ""

    def config_dict(self) -> dict[str, Any]:
        """The configuration as JSON-friendly values, for provenance."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.config).items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class FrameExtractor(Extractor[SegmentMedia, FrameFeatures]):
    """An audio or face extractor: frames of one segment, plus an optional utterance-level companion set."""

    @abstractmethod
    def feature_set(self) -> FeatureSet:
        """The frame-level set."""

    def utterance_set(self) -> FeatureSet | None:
        """The utterance-level set this extractor also fills (schema 2), or None."""
        return None

    def utterance(self, media: SegmentMedia, frames: FrameFeatures) -> np.ndarray | None:
        """The segment's utterance-level vector (D,), or None when absent (the writer marks it)."""
        return None

    def extract_with_utterance(self, media: SegmentMedia) -> tuple[FrameFeatures, np.ndarray | None]:
        """Frames and the utterance-level vector together: an extractor that gets both from one pass over the
        media (openSMILE) overrides this."""
        frames = self.extract(media)
        return frames, self.utterance(media, frames)

    def finish_video(self, segments: list[tuple[FrameFeatures, np.ndarray | None]]
                     ) -> list[tuple[FrameFeatures, np.ndarray | None]]:
        """(frames, utterance vector) of every segment of one media file, once all are extracted, returned
        completed: an extractor with features relative to the whole video (the mediapipe face set's rel_*
        cues) fills them here. Default: unchanged."""
        return segments


def empty_frames(dim: int) -> FrameFeatures:
    """No frames at all: a segment without audio (or without pictures for a face set)."""
    return FrameFeatures(np.zeros(0), np.zeros(0), np.zeros((0, dim), np.float32))


def importable(*modules: str) -> tuple[bool, str]:
    """Whether every module can be found without importing it (cheap: importlib's finder only)."""
    import importlib.util

    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return False, f"python package {m!r} is not installed"
    return True, ""


def available(modules: tuple[str, ...], files: Callable[[], object], hint: str = "") -> tuple[bool, str]:
    """The usual `availability`: every module findable (else why, `hint` added: how to install it), then
    `files()`, a look for the model's files on disk that raises PipelineError saying what is missing (its first
    line is the reason)."""
    ok, why = importable(*modules)
    if not ok:
        return False, why + hint
    try:
        files()
    except PipelineError as e:
        return False, str(e).splitlines()[0]
    return True, ""


def package_version(distribution: str) -> str:
    """An installed distribution's version from its metadata (no import); "" when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return ""
