"""Turning command-line and flow parameters into the typed configurations of `pipelines` and `mmolre`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
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
def _number(text: str, kind: type, low: float | None, high: float | None, low_open: bool, what: str) -> Any:
    import argparse
    import math

    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
    if (low is not None and (value < low or (low_open and value == low))) or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
    return value


def count(text: str) -> int:
    """A whole number of at least 1 (`--units-per-shard`, `--batch-videos`, `--epochs`)."""
    return _number(text, int, 1, None, False, "a whole number of 1 or more")


def workers(text: str) -> int:
    """Local worker processes: 0 (inline) or more; -1 used to wait forever for workers that never came."""
    return _number(text, int, 0, 1024, False, "a whole number from 0 (inline) to 1024")


def seed(text: str) -> int:
    return _number(text, int, 0, 2**32 - 1, False, "a whole number from 0 to 4294967295")


def rate(text: str) -> float:
    """A finite number above 0 (`--fps`): nan, inf, 0 and negatives are refused."""
    return _number(text, float, 0.0, None, True, "a finite number above 0")


def fraction(text: str) -> float:
    """A share from 0 up to, but not including, 1 (`--valid-fraction`)."""
    value = _number(text, float, 0.0, 1.0, False, "a number from 0 up to 1 (not 1)")
    if value == 1.0:
        import argparse

        raise argparse.ArgumentTypeError(f"must be a number from 0 up to 1 (not 1), not {text!r}")
    return value


def build_config(mode: str = "weighted", fill: str = "zeros", keep_frames: bool = False, units_per_shard: int = 16) -> Any:
    """The store writer's settings; a shard groups `units_per_shard` units (SDK: 4 videos each; videos: 1 each)."""
    from pipelines.collapse import CollapseConfig
    from pipelines.store_writer import BuildConfig

    return BuildConfig(collapse=CollapseConfig(mode=mode, fill=fill), keep_frames=keep_frames, units_per_shard=units_per_shard)


def video_config(face: str | None = None, fps: float | None = None, asr_model: str | None = None,
                 text_model: str | None = None, **extractors: Any) -> Any:
    """A VideoConfig where None keeps the default; face "none" or None skips the face modality. `extractors`:
    the other extractors by name (audio, text, aligner, asr; None keeps the registry's default)."""
    from pipelines.recipes.videos import VideoConfig

    names = {"audio_set" if k == "audio" else k: v for k, v in extractors.items()}
    settings: dict[str, Any] = {"face": None if face in (None, "none") else face}
    if text_model:  # the store's text set is named after the model folder: text_roberta_base, ...
        settings["text_name"] = "text_" + (re.sub(r"[^a-z0-9]+", "_", Path(text_model).name.lower()).strip("_") or "model")
    settings |= {k: v for k, v in {"fps": fps, "asr_model": asr_model, "text_model": text_model, **names}.items()
                 if v is not None}
    return VideoConfig(**settings)


_EXTRACTOR_OPTIONS = ("face", "audio", "text", "aligner", "asr", "aligner_multilingual", "asr_multilingual",
                      "audio_model", "audio_layer", "text_languages")


def extractors(args: argparse.Namespace) -> dict[str, str | None]:
    """The extractor names `add_extractor_options` parsed, as `video_config`'s keywords."""
    return {k: getattr(args, k) for k in _EXTRACTOR_OPTIONS}


def add_extractor_options(p: argparse.ArgumentParser) -> None:
    """--face, --audio, --text, --aligner(-multilingual), --asr(-multilingual): choices, defaults and help from the
    extractor registry."""
    from pipelines.extract import registry

    for option, kind, role, what in (
            ("--face", "face", "", "face backend"), ("--audio", "audio", "", "audio extractor"),
            ("--text", "text", "", "text encoder"), ("--aligner", "aligner", "", "aligner of English transcripts"),
            ("--asr", "asr", "", "recogniser of English speech (no transcript; the aligner's fallback)"),
            ("--aligner-multilingual", "aligner", "multilingual", "aligner of transcripts in other languages"),
            ("--asr-multilingual", "asr", "multilingual", "recogniser of other languages and of language und")):
        choices = (*registry.names(kind), "none") if kind == "face" else tuple(registry.names(kind))
        p.add_argument(option, choices=choices, default=registry.default(kind, role),
                       help=f"{what}: {registry.help_text(kind)}" + ("; none: no face features" if kind == "face" else ""))
    p.add_argument("--audio-model", default=None, metavar="PATH",
                   help="local wav2vec2 / HuBERT / Data2Vec-Audio folder for --audio transformers-audio")
    p.add_argument("--audio-layer", type=int, default=None, help="its hidden layer (0: feature projection; default -1, the last)")
    p.add_argument("--text-languages", default=None, metavar="en|de,fr|*",
                   help="languages the text encoder reads (default en; * for a multilingual --text-model such as XLM-R)")


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
    return {"model": model, "tasks": json.dumps([task]) if task else None}


def text_settings(text_encoder: str | None, text_model: str | None) -> dict[str, str | None]:
    """`--text-encoder`/`--text-model` as TrainConfig settings (a path quoted so YAML keeps it text)."""
    return {"text_encoder": text_encoder, "text_model": json.dumps(str(text_model)) if text_model else None}


def train_config(config_file: str | None, overrides: Sequence[str] = (), **settings: Any) -> Any:
    """TrainConfig from a YAML/JSON file (or defaults), then `key=value` overrides; None settings are skipped."""
    import yaml

    from mmolre.config import TrainConfig

    try:
        config = TrainConfig.load(config_file) if config_file else TrainConfig()
    except yaml.YAMLError as e:
        raise _yaml_problem(f"--config {config_file}", e) from None
    if settings.get("model"):  # the arch settings that follow are the chosen model's
        try:
            config = config.with_model(settings["model"])
        except ValueError as e:
            raise OptionError(f"--model {settings['model']}: {e}") from None
    pairs = [f"{k}={v}" for k, v in settings.items() if v is not None]
    try:
        pairs += [f"{pair.partition('=')[0]}={_yaml_text(check_override(config, pair))}" for pair in overrides]
        return config.with_overrides(pairs) if pairs else config
    except yaml.YAMLError as e:
        raise _yaml_problem(f"--set {' '.join(overrides)}", e) from None
    except OptionError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise OptionError(f"--set {' '.join(overrides)}: {e}") from None


def _yaml_text(value: Any) -> str:
    """A checked value as YAML that reads back as the same value: json, except that a float like 1e-05 gets a
    dot (YAML 1.1 reads `1e-05` as text, which would reach the optimiser as a string)."""
    text = json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text.split("e")[0]:
        text = text.replace("e", ".0e", 1)
    return text


def check_override(config: Any, pair: str) -> Any:
    """Refuse `key=value` before training starts when the key is unknown or the value's type is wrong, rather
    than failing with a TypeError deep inside the optimiser."""
    import yaml

    key, sep, text = pair.partition("=")
    if not sep or not key:
        raise OptionError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set lr=1e-3 or --set arch.d_model=64")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise OptionError(f"--set {pair!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    target, hint = config, Any
    for part in key.split("."):
        if not dataclasses.is_dataclass(target):
            raise OptionError(f"--set {pair!r}: {key!r} goes inside a setting that has no sub-settings")
        names = [f.name for f in dataclasses.fields(target)]
        if part not in names:
            raise OptionError(f"--set {pair!r}: unknown setting {part!r}; known: {', '.join(names)}")
        hint = typing.get_type_hints(type(target))[part]
        target = getattr(target, part)
    if isinstance(value, str) and not _fits(value, hint) and _fits(1.0, hint):
        try:  # YAML 1.1 reads 1e-3 (no dot) as text
            value = float(value)
        except ValueError:
            pass
    if not _fits(value, hint):
        raise OptionError(f"--set {pair!r}: {key} must be {_describe(hint)}, not {value!r}")
    return value


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    if origin is dict:
        k, v = args or (Any, Any)
        return isinstance(value, dict) and all(_fits(a, k) and _fits(b, v) for a, b in value.items())
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "text", bool: "true or false", type(None): "null"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return names.get(hint, str(hint).replace("typing.", ""))
