"""A feature set's provenance: what it is, what each dimension means and what made it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class FeatureSet:
    """Everything a reader needs to interpret a feature set without our code.

    `frame_rate` is frames per second for frame-level sets, None for sets that are word-level by nature
    (a text encoder's word vectors). `level` is where the store keeps it: "word" (the aligned table, one vector
    per word) or "utterance" (schema 2's utterance table, one vector per segment); manifests written before
    schema 2 have no level and load as "word"."""

    name: str
    dims: tuple[str, ...]
    modality: str  # text, audio or visual
    extractor: str
    extractor_version: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    frame_rate: float | None = None
    description: str = ""
    level: str = "word"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or "__" in self.name:
            raise ValueError(f"feature set name {self.name!r}: use lower-case letters, digits and single underscores")
        if self.modality not in ("text", "audio", "visual"):
            raise ValueError(f"feature set {self.name!r}: modality must be text, audio or visual, not {self.modality!r}")
        if self.level not in ("word", "utterance"):
            raise ValueError(f"feature set {self.name!r}: level must be word or utterance, not {self.level!r}")
        if len(self.dims) == 0:
            raise ValueError(f"feature set {self.name!r} has no dimensions")
        if len(set(self.dims)) != len(self.dims):
            raise ValueError(f"feature set {self.name!r} has repeated dimension names")
        object.__setattr__(self, "dims", tuple(self.dims))

    @property
    def dim(self) -> int:
        return len(self.dims)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dims"] = list(self.dims)
        d["dim"] = self.dim
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSet:
        d = {k: v for k, v in d.items() if k != "dim"}
        d["dims"] = tuple(d["dims"])
        return cls(**d)
