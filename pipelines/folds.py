"""The standard train/valid/test folds of CMU-MOSI and CMU-MOSEI (video ids), and assigning segments to them.

The fold lists are the SDK's public ones, shipped as package data so a build needs no download. Results are
only comparable across papers when these folds are used, so they are the default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from feature_schemas import SPLITS

from .errors import PipelineError

DATASETS = ("mosei", "mosi")


def _check(folds: Mapping[str, Sequence[str]], source: str) -> dict[str, tuple[str, ...]]:
    unknown = sorted(set(folds) - set(SPLITS))
    if unknown:
        raise PipelineError(f"{source}: unknown fold names {unknown} (allowed: {', '.join(SPLITS)})", "folds", source_path=source)
    out = {s: tuple(str(v) for v in folds.get(s, ())) for s in SPLITS}
    seen: dict[str, str] = {}
    for split, ids in out.items():
        for vid in ids:
            if vid in seen and seen[vid] != split:
                raise PipelineError(f"{source}: video {vid!r} is in both {seen[vid]} and {split}", "folds", vid, source)
            seen[vid] = split
    return out


@cache
def standard_folds(dataset: str) -> dict[str, tuple[str, ...]]:
    """The SDK's standard folds for "mosei" or "mosi": split -> video ids."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, not {dataset!r}")
    name = f"{dataset}_standard_folds.json"
    text = resources.files(__package__).joinpath("data", name).read_text()
    return _check(json.loads(text), name)


def load_folds(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """Folds from a JSON file `{"train": [...], "valid": [...], "test": [...]}`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise PipelineError(f"{p}: unreadable folds file ({e})", "folds", source_path=str(p)) from None
    if not isinstance(data, dict):
        raise PipelineError(f"{p}: folds must be a JSON object of split -> video ids", "folds", source_path=str(p))
    return _check(data, str(p))


def resolve_folds(
    folds: Mapping[str, Sequence[str]] | str | os.PathLike | None, dataset: str
) -> dict[str, tuple[str, ...]]:
    """None -> the standard folds of `dataset`; a path -> that JSON file; a mapping -> checked as given."""
    if folds is None:
        return standard_folds(dataset)
    if isinstance(folds, (str, os.PathLike)):
        return load_folds(folds)
    return _check(folds, "folds")


def split_of(folds: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """video id -> split."""
    return {vid: split for split, ids in folds.items() for vid in ids}


def video_id_of(key: str) -> str:
    """The video id of an SDK key: `abc[3]` -> `abc` (the SDK compares entries the same way)."""
    return key.split("[", 1)[0]
