"""The model registry as training, checkpoints and `mmolre models` use it: any registered model's config to and from
plain values, its defaults, and the reference input its parameters are counted on.

Models register themselves (`mmolre.models.contract.register_model`); nothing here lists them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from torch import nn

from .models.contract import (
    PLACED,
    ModelInfo,
    assemble_model,
    config_from_values,
    count_parameters,
    model_info,
    models,
)
from .models.contract import config_to_dict as config_to_dict  # re-exported: the registry's pair of readers
from .settings import typed
from .tasks import TaskSpec

# what `mmolre models` counts parameters on: a CMU-MOSI-like word-aligned store (MiniLM text, eGeMAPS audio, the
# mediapipe face set) with one regression task, sentiment
REFERENCE_INPUT_DIMS: dict[str, int] = {"text": 384, "audio": 25, "face": 22}
REFERENCE_TASKS: tuple[TaskSpec, ...] = (TaskSpec("sentiment", "regression"),)


def config_from_dict(name: str, d: dict[str, Any], source: str = "arch") -> Any:
    """The named model's config from plain values (`config_to_dict`'s output, or hyperparameters alone: the store's
    input dims and tasks then default to the reference input). Unknown names are refused, naming the model; each
    hyperparameter is checked against its field's type as a top-level setting is (`settings.typed`: YAML 1.1 reads
    `1e-5` as text, a number is expected), so a bad value is named here, not by the model's constructor."""
    cls = model_info(name).config
    hints = typing.get_type_hints(cls)
    checked = {k: typed(v, hints[k], k, source) if k in hints and k not in PLACED else v for k, v in d.items()}
    return config_from_values(cls, {"input_dims": REFERENCE_INPUT_DIMS, "tasks": REFERENCE_TASKS, **checked},
                              f"{source}: model {name!r} has no setting(s)")


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
