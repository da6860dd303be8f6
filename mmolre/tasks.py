"""What the model predicts: the tasks a store's labels support, and how each is posed.

Sentiment is a regression in [-3, 3] (CMU-MOSI/MOSEI) or classes (MELD: negative, neutral, positive);
emotion is multi-label presence over MOSEI's six emotions (intensity > 0) or one class per segment, over the
class set the store's manifest records (MELD's 7, CREMA-D's 6, RAVDESS's 8, ...; feature_schemas.labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc

from feature_schemas import EMOTIONS, MELD_EMOTION_CLASSES, Store, StoreError
from feature_schemas import SENTIMENT_CLASSES as SENTIMENT_CLASSES  # re-exported for importers

EMOTION_CLASSES: tuple[str, ...] = MELD_EMOTION_CLASSES  # MELD's; a store's own set is in its manifest
TASK_NAMES: tuple[str, ...] = ("sentiment", "emotion")
KINDS: tuple[str, ...] = ("regression", "multilabel", "multiclass")


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task: its name, how it is posed, and (for classes/labels) the names in output order."""

    name: str
    kind: str
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind != "regression" and len(self.classes) < 2:
            raise ValueError(f"task {self.name!r} ({self.kind}) needs at least two class names")
        object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def out_dim(self) -> int:
        return 1 if self.kind == "regression" else len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        return cls(d["name"], d["kind"], tuple(d.get("classes", ())))


def infer_tasks(
    store: Store,
    tasks: Sequence[str] | None = None,
    sentiment: str = "auto",
    emotion: str = "auto",
) -> tuple[TaskSpec, ...]:
    """The tasks the store's training labels support.

    `tasks` restricts to names ("sentiment", "emotion"); `sentiment` is auto|regression|classes and `emotion`
    auto|presence|classes, where auto prefers the numeric columns (MOSI/MOSEI) over the class columns (MELD)."""
    if sentiment not in ("auto", "regression", "classes"):
        raise ValueError(f"sentiment must be auto, regression or classes, not {sentiment!r}")
    if emotion not in ("auto", "presence", "classes"):
        raise ValueError(f"emotion must be auto, presence or classes, not {emotion!r}")
    wanted = tuple(tasks) if tasks else TASK_NAMES
    for t in wanted:
        if t not in TASK_NAMES:
            raise ValueError(f"unknown task {t!r}; tasks are {', '.join(TASK_NAMES)}")
    split = "train" if "train" in store.splits() else None
    seg = store.segments(split, columns=["sentiment", *EMOTIONS, "sentiment_class", "emotion_class"])

    def has(col: str) -> bool:
        return seg.num_rows > 0 and seg.column(col).null_count < seg.num_rows

    def classes(col: str, recorded: tuple[str, ...]) -> tuple[str, ...]:
        """The store's recorded classes, in their order; a label outside them means the store is inconsistent."""
        found = {str(v) for v in pc.unique(seg.column(col).drop_null()).to_pylist()}
        if not found <= set(recorded):
            raise StoreError(f"{store.path}: {col} values {sorted(found - set(recorded))} are not in the store's "
                             f"recorded classes ({', '.join(recorded) or 'none'}); run `mmolre validate` and rebuild")
        if len(recorded) < 2:
            raise StoreError(f"{store.path}: {col} has {len(recorded)} class ({', '.join(recorded)}); a classifier needs two")
        return recorded

    out: list[TaskSpec] = []
    if "sentiment" in wanted:
        if sentiment in ("auto", "regression") and has("sentiment"):
            out.append(TaskSpec("sentiment", "regression"))
        elif sentiment in ("auto", "classes") and has("sentiment_class"):
            out.append(TaskSpec("sentiment", "multiclass", classes("sentiment_class", store.manifest.sentiment_classes)))
        elif tasks:
            raise StoreError(f"{store.path}: no sentiment labels ({sentiment}) in the training split")
    if "emotion" in wanted:
        if emotion in ("auto", "presence") and any(has(e) for e in EMOTIONS):
            out.append(TaskSpec("emotion", "multilabel", EMOTIONS))
        elif emotion in ("auto", "classes") and has("emotion_class"):
            out.append(TaskSpec("emotion", "multiclass", classes("emotion_class", store.manifest.emotion_classes)))
        elif tasks:
            raise StoreError(f"{store.path}: no emotion labels ({emotion}) in the training split")
    if not out:
        raise StoreError(f"{store.path}: no sentiment or emotion labels in the training split; nothing to train")
    return tuple(out)
