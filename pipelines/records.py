"""What a recipe, a stage or an extractor hands on: plain dataclasses of numpy arrays.

A recipe turns its inputs into `WorkUnit`s (a video, or a batch of SDK ids); a stage processes a unit into
`SegmentRecord`s and `Failure`s (errors: `pipelines.errors`). The writer collapses frames to words, shards
and writes; it never needs to know where the data came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class WorkUnit:
    """One independently processable input. `key` changes whenever the unit's inputs change (file sizes and
    mtimes, or a content hash), so a rerun can skip units whose outputs are already written. `payload` is the
    stage's typed unit (e.g. `stages.csd.CsdVideos`), picklable; its `source_path`, when it has one, names the
    input in failure rows."""

    unit_id: str
    key: str
    payload: Any = None

    @property
    def source_path(self) -> str | None:
        """The input a failure of the whole unit is reported against (None when the payload names none)."""
        p = self.payload
        return p.get("source_path") if isinstance(p, dict) else getattr(p, "source_path", None)


@dataclass
class Words:
    """A segment's words. Times are seconds in the source video; NaN where unknown (text-only inputs)."""

    words: list[str]
    start: np.ndarray  # (W,) float64
    end: np.ndarray  # (W,) float64
    confidence: np.ndarray  # (W,) float32 in [0, 1]
    method: str  # given, forced, asr, uniform, none
    written: list[str] | None = None  # each word as written (punctuation kept); None: the words as they are

    def __post_init__(self) -> None:
        n = len(self.words)
        if self.written is not None and len(self.written) != n:
            self.written = None  # a spelling that does not line up with the words is worse than none
        self.start = np.asarray(self.start, dtype=np.float64).reshape(-1)
        self.end = np.asarray(self.end, dtype=np.float64).reshape(-1)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        if not (len(self.start) == len(self.end) == len(self.confidence) == n):
            raise ValueError(f"words: {n} words but {len(self.start)} starts, {len(self.end)} ends, {len(self.confidence)} confidences")

    @classmethod
    def untimed(cls, words: list[str]) -> Words:
        n = len(words)
        return cls(list(words), np.full(n, np.nan), np.full(n, np.nan), np.ones(n, np.float32), "none")


@dataclass
class FrameFeatures:
    """Frame-level features of one segment for one feature set, as extracted."""

    start: np.ndarray  # (N,) float64 seconds
    end: np.ndarray  # (N,) float64 seconds
    values: np.ndarray  # (N, D) float32; may hold NaN/inf, see valid
    valid: np.ndarray | None = None  # (N,) bool: usable frame (face found, above threshold); finite-ness is checked anyway
    confidence: np.ndarray | None = None  # (N,) float32

    def __post_init__(self) -> None:
        self.start = np.asarray(self.start, dtype=np.float64).reshape(-1)
        self.end = np.asarray(self.end, dtype=np.float64).reshape(-1)
        self.values = np.asarray(self.values, dtype=np.float32)
        n = len(self.start)
        if self.values.ndim != 2 or self.values.shape[0] != n or len(self.end) != n:
            raise ValueError(f"frames: {n} starts, {len(self.end)} ends, values of shape {self.values.shape}")
        self.valid = np.ones(n, bool) if self.valid is None else np.asarray(self.valid, dtype=bool).reshape(-1)
        self.confidence = np.ones(n, np.float32) if self.confidence is None else np.asarray(self.confidence, np.float32).reshape(-1)


@dataclass
class WordFeatures:
    """Features that are word-level by nature (a text encoder's word vectors): no collapse needed."""

    values: np.ndarray  # (W, D) float32
    coverage: np.ndarray | None = None  # (W,) float32, 1 where the vector is real

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        n = self.values.shape[0]
        self.coverage = np.ones(n, np.float32) if self.coverage is None else np.asarray(self.coverage, np.float32).reshape(-1)


@dataclass
class SegmentRecord:
    """Everything known of one segment. `segment` is one row of the segments table (see feature_schemas)."""

    segment: dict[str, Any]
    words: Words
    frames: dict[str, FrameFeatures] = field(default_factory=dict)
    word_features: dict[str, WordFeatures] = field(default_factory=dict)
    # utterance-level sets (schema 2): one (D,) vector per set; a missing set or a non-finite vector is "absent"
    utterance_features: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def segment_id(self) -> str:
        return str(self.segment["segment_id"])


@dataclass(frozen=True)
class Failure:
    item_id: str
    stage: str
    reason: str
    source_path: str | None = None


@dataclass
class UnitResult:
    """What processing one unit produced; `report` holds recipe counters (ids dropped, values cleaned)."""

    records: list[SegmentRecord] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    report: dict[str, int] = field(default_factory=dict)
    # items built with a fallback, and why ({"item_id", "stage", "note"}); the build report keeps the first ones
    notes: list[dict[str, str]] = field(default_factory=list)


# A build stage: (unit, the plan's options) -> what the unit produced. A top-level function, so a plan holding it
# pickles it by its qualified name and a worker imports only that stage's module.
StageFunction = Callable[[WorkUnit, Any], UnitResult]
