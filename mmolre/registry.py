"""The model registry as training, checkpoints and `mmolre models` use it: any registered model's config to and from
plain values, its defaults, and the reference input its parameters are counted on.

Models register themselves (`mmolre.models.contract.register_model`); nothing here lists them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from torch import nn

from .models.contract import ModelInfo, assemble_model, count_parameters, model_info, models
from .tasks import TaskSpec

# what `mmolre models` counts parameters on: a CMU-MOSI-like word-aligned store (MiniLM text, eGeMAPS audio, the
# mediapipe face set) with one regression task, sentiment
REFERENCE_INPUT_DIMS: dict[str, int] = {"text": 384, "audio": 25, "face": 22}
REFERENCE_TASKS: tuple[TaskSpec, ...] = (TaskSpec("sentiment", "regression"),)
PLACED = ("input_dims", "tasks")  # fields the store decides, never hyperparameters


def config_to_dict(config: Any) -> dict[str, Any]:
    """A model config as JSON-ready values (tasks as dicts, tuples as lists): what checkpoints and config.json hold."""
    d = dataclasses.asdict(config)
    d["tasks"] = [t.to_dict() for t in config.tasks]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_from_dict(name: str, d: dict[str, Any], source: str = "arch") -> Any:
    """The named model's config from plain values (`config_to_dict`'s output, or hyperparameters alone: the store's
    input dims and tasks then default to the reference input). Unknown names are refused, naming the model."""
    info = model_info(name)
    known = {f.name: f for f in dataclasses.fields(info.config)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"{source}: model {name!r} has no setting(s) {', '.join(sorted(unknown))} "
                         f"(has: {', '.join(sorted(k for k in known if k not in PLACED))})")
    hints = typing.get_type_hints(info.config)
    values = {k: _typed(v, hints.get(k)) for k, v in d.items() if k not in PLACED}
    tasks = tuple(t if isinstance(t, TaskSpec) else TaskSpec.from_dict(t) for t in d.get("tasks", REFERENCE_TASKS))
    return info.config(input_dims=dict(d.get("input_dims", REFERENCE_INPUT_DIMS)), tasks=tasks, **values)


def _typed(value: Any, hint: Any) -> Any:
    """Lists read from JSON/YAML become tuples where the field is a tuple (ranks, kernel sizes)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, list) and any(typing.get_origin(a) is tuple or a is tuple for a in args):
        return tuple(value)
    return value


def default_config(name: str) -> Any:
    """The named model's default config on the reference input."""
    return config_from_dict(name, {})


def placed(config: Any, input_dims: dict[str, int], tasks: tuple[TaskSpec, ...]) -> Any:
    """`config`'s hyperparameters on a store's input dims and tasks (the config rebuilt, so its checks rerun)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in PLACED}
    return type(config)(input_dims=dict(input_dims), tasks=tuple(tasks), **values)


def model_of(config: Any) -> str | None:
    """The registered model whose config class `config` is an instance of (the first registered), or None."""
    for name, info in models().items():
        if type(config) is info.config:
            return name
    return None


def sized_for(name: str, config: Any, n_train: int) -> Any:
    """A config left at the model's defaults, sized for `n_train` training segments by its `sized_for` (models
    without one, and configs a user changed, stay as they are)."""
    fn = getattr(config, "sized_for", None)
    if fn is None or config != default_config(name):
        return config
    return fn(n_train)


def changes(before: Any, after: Any) -> str:
    """`d_model 128 -> 64, n_blocks 2 -> 1`: the fields two configs of one class differ in."""
    return ", ".join(f"{f.name} {_shown(getattr(before, f.name))} -> {_shown(getattr(after, f.name))}"
                     for f in dataclasses.fields(before) if getattr(before, f.name) != getattr(after, f.name))


def _shown(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def reference_model(name: str) -> nn.Module:
    return assemble_model(name, default_config(name))


def describe(info: ModelInfo) -> dict[str, Any]:
    """One line of `mmolre models`: the registry's facts and the trainable parameters on the reference input."""
    return info.to_dict(count_parameters(reference_model(info.name)))


def catalogue() -> list[dict[str, Any]]:
    return [describe(info) for info in models().values()]


REFERENCE_TEXT = ("parameters: trainable, at the default size, on a CMU-MOSI-like word-aligned input (text 384 "
                  "(MiniLM), audio 25 (eGeMAPS), face 22 (mediapipe)) with one regression task (sentiment)")
