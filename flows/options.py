"""Turning command-line and flow parameters into the typed configurations of `pipelines` and `mmolre`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any


class OptionError(ValueError):
    """A `--set`/`--config` value names no setting or has the wrong type; the message says which and what fits."""


class UsageError(OptionError):
    """A command line that cannot work as given: one line, exit 2 (argparse's usage errors)."""


def _yaml_problem(where: str, e: Exception) -> UsageError:
    mark = getattr(e, "problem_mark", None)
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = str(getattr(e, "problem", None) or e).splitlines()[0]
    return UsageError(f"{where}: {at}{what} (settings are plain values: numbers, text, lists and mappings; YAML tags "
                      "such as !!python/... are refused)")


# -- numbers on the command line: argparse types, so a bad one is a usage error (exit 2) naming the option --------
def _number(text: str, kind: type, what: str, fits: Callable[[Any], bool]) -> Any:
    """`text` as a finite `kind` for which `fits` holds; else argparse's error saying `what` it must be."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        value = None
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or not fits(value):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
    return value


def count(text: str) -> int:
    """A whole number of at least 1 (`--units-per-shard`, `--batch-videos`, `--epochs`)."""
    return _number(text, int, "a whole number of 1 or more", lambda v: v >= 1)


def workers(text: str) -> int:
    """Local worker processes: 0 (inline) or more; -1 used to wait forever for workers that never came."""
    return _number(text, int, "a whole number from 0 (inline) to 1024", lambda v: 0 <= v <= 1024)


def seed(text: str) -> int:
    return _number(text, int, "a whole number from 0 to 4294967295", lambda v: 0 <= v <= 2**32 - 1)


def rate(text: str) -> float:
    """A finite number above 0 (`--fps`): nan, inf, 0 and negatives are refused."""
    return _number(text, float, "a finite number above 0", lambda v: v > 0)


def fraction(text: str) -> float:
    """A share from 0 up to, but not including, 1 (`--valid-fraction`)."""
    return _number(text, float, "a number from 0 up to 1 (not 1)", lambda v: 0 <= v < 1)


def build_config(mode: str = "weighted", fill: str = "zeros", keep_frames: bool = False, units_per_shard: int = 16) -> Any:
    """The store writer's settings; a shard groups `units_per_shard` units (SDK: 4 videos each; videos: 1 each)."""
    from pipelines.collapse import CollapseConfig
    from pipelines.store_writer import BuildConfig

    return BuildConfig(collapse=CollapseConfig(mode=mode, fill=fill), keep_frames=keep_frames, units_per_shard=units_per_shard)


def model_settings(name: str | None, task: str | None = None) -> dict[str, str | None]:
    """`--model`/`--task` as TrainConfig settings: CLI spellings (hard-sharing) become registered names, checked
    against the registry; a single-task run is any model with one task (`single-task` alone: mmolre)."""
    model = None if name is None else name.replace("-", "_")
    if model == "single_task":
        model, task = "mmolre", task or "sentiment"
    if model is not None:
        from mmolre.models.contract import models

        known = models()
        if model not in known:
            raise OptionError(f"--model {name}: unknown model; choose one of "
                              f"{', '.join(n.replace('_', '-') for n in known)} or single-task (see `mmolre models`)")
    return {"model": model, "tasks": [task] if task else None}


def text_settings(text_encoder: str | None, text_model: str | None) -> dict[str, str | None]:
    """`--text-encoder`/`--text-model` as TrainConfig settings (typed values)."""
    return {"text_encoder": text_encoder, "text_model": str(text_model) if text_model else None}


def train_config(config_file: str | None, overrides: Sequence[str] = (), **settings: Any) -> Any:
    """TrainConfig from a YAML/JSON file (or defaults), then typed `settings` (None skipped: the file's or the
    default stays), then `key=value` overrides, each checked against its field's type before training starts."""
    from mmolre.config import TrainConfig
    from mmolre.settings import SettingError

    try:
        config = TrainConfig.load(config_file) if config_file else TrainConfig()
    except SettingError as e:
        if e.yaml_error is None:
            raise
        raise _yaml_problem(f"--config {config_file}", e.yaml_error) from None
    try:
        config = config.with_values(**{k: v for k, v in settings.items() if v is not None})
        return config.with_overrides(list(overrides))
    except SettingError as e:  # a --set value that is not YAML: "--set 'lr=[1': the value: not valid YAML (...)"
        raise OptionError(str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise OptionError(f"--set {' '.join(overrides)}: {e}") from None
