"""Label vocabularies, defined once: sentiment classes, MOSEI's six presence emotions, and the single-label
emotion class sets that datasets bring (MELD, CREMA-D, RAVDESS, IEMOCAP, or any set a build declares).

A store records the sets it was built with in its manifest (`labels`), so that the validator, the model and
reports read the classes from the store instead of assuming MELD's. Manifests written before `labels`
existed were built under a fixed MELD class set; `recorded_emotion_classes` returns that set for them.

Presence emotions (the six numeric columns) follow one rule on every route: a row that gives any emotion
(an `emotions` object, per-emotion columns, the SDK's label vector, an MMSA `emotion_labels` row) has 0 for
every emotion it does not list; only a row with no emotion field at all has unknown (null) emotions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .spec import EMOTIONS

SENTIMENT_CLASSES: tuple[str, ...] = ("negative", "neutral", "positive")
MOSEI_EMOTIONS: tuple[str, ...] = EMOTIONS  # presence columns happy..fear, intensity in [0, 3]

_CLASS_NAME = re.compile(r"^[a-z0-9][a-z0-9 _'-]{0,39}$")


@dataclass(frozen=True)
class ClassSet:
    """A single-label emotion class set: its classes in output order, the dataset it comes from (None for a
    set a build declared or found in its data), and codes the dataset's files use for them (CREMA-D's `ANG`)."""

    name: str | None
    classes: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def canonical(self, value: str) -> str | None:
        """The class a (normalised) value names in this set, or None when it names none."""
        if value in self.classes:
            return value
        return self.aliases.get(value)

    def accepts(self, values: Iterable[str]) -> bool:
        return all(self.canonical(v) is not None for v in values)


MELD_EMOTION_CLASSES: tuple[str, ...] = ("neutral", "joy", "sadness", "anger", "surprise", "disgust", "fear")
CREMAD_EMOTION_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "happy", "neutral", "sad")
RAVDESS_EMOTION_CLASSES: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
IEMOCAP_EMOTION_CLASSES: tuple[str, ...] = ("neutral", "happiness", "sadness", "anger", "surprise", "fear", "disgust",
                                            "frustration", "excited", "other")

# Known sets in the order inference prefers among equally small candidates.
EMOTION_CLASS_SETS: dict[str, ClassSet] = {
    "meld": ClassSet("meld", MELD_EMOTION_CLASSES),
    "cremad": ClassSet("cremad", CREMAD_EMOTION_CLASSES,
                       {"ang": "anger", "dis": "disgust", "fea": "fear", "hap": "happy", "neu": "neutral"}),
    "ravdess": ClassSet("ravdess", RAVDESS_EMOTION_CLASSES,
                        {f"{i + 1:02d}": c for i, c in enumerate(RAVDESS_EMOTION_CLASSES)}),
    "iemocap": ClassSet("iemocap", IEMOCAP_EMOTION_CLASSES,
                        {"neu": "neutral", "hap": "happiness", "sad": "sadness", "ang": "anger", "sur": "surprise",
                         "fea": "fear", "dis": "disgust", "fru": "frustration", "exc": "excited", "oth": "other"}),
}
LEGACY_EMOTION_CLASSES: tuple[str, ...] = MELD_EMOTION_CLASSES  # what stores without `labels` were held to


def class_name(value: Any) -> str:
    """A class label as stored: stripped, lower case; ValueError for one that cannot be a class name."""
    text = str(value).strip().lower()
    if not _CLASS_NAME.match(text):
        raise ValueError(f"{value!r} is not a class name (letters, digits, space, _ ' -; at most 40 characters)")
    return text


def emotion_class_set(found: Iterable[str] = (), declared: str | Sequence[str] | None = None) -> ClassSet:
    """The build's emotion class set. `declared`: a known set's name (meld, cremad, ravdess, iemocap), class
    names (a list or one comma-separated string), or None to infer it from the (normalised) values `found`:
    the smallest known set that names them all, else the values found, sorted."""
    if declared is not None:
        if isinstance(declared, str) and declared.strip().lower() in EMOTION_CLASS_SETS:
            return EMOTION_CLASS_SETS[declared.strip().lower()]
        names = declared.split(",") if isinstance(declared, str) else list(declared)
        classes = tuple(dict.fromkeys(class_name(n) for n in names if str(n).strip()))
        if len(classes) < 2:
            raise ValueError(f"emotion classes {declared!r}: name a known set ({', '.join(EMOTION_CLASS_SETS)}) "
                             "or at least two class names")
        return ClassSet(None, classes)
    values = set(found)
    if not values:
        return ClassSet(None, ())
    fits = [s for s in EMOTION_CLASS_SETS.values() if s.accepts(values)]
    if fits:
        return min(fits, key=lambda s: len(s.classes))  # min keeps the first of equals: the order above
    return ClassSet(None, tuple(sorted(values)))


def labels_record(emotion_set: ClassSet | None = None) -> dict[str, Any]:
    """The manifest's `labels`: the store's emotion class set, sentiment classes and presence emotions."""
    emotion_set = emotion_set or ClassSet(None, ())
    return {
        "emotion_classes": list(emotion_set.classes),
        "emotion_class_set": emotion_set.name,
        "sentiment_classes": list(SENTIMENT_CLASSES),
        "emotions": list(MOSEI_EMOTIONS),
    }


def recorded_emotion_classes(labels: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The emotion classes a manifest's `labels` record; MELD's for a store written before `labels` existed."""
    if not labels or "emotion_classes" not in labels:
        return LEGACY_EMOTION_CLASSES
    return tuple(str(c) for c in labels["emotion_classes"])


def recorded_sentiment_classes(labels: Mapping[str, Any] | None) -> tuple[str, ...]:
    if not labels or "sentiment_classes" not in labels:
        return SENTIMENT_CLASSES
    return tuple(str(c) for c in labels["sentiment_classes"])
