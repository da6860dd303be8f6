"""What every model in the zoo is to the harness: one forward signature, one output type, one registry.

Training, evaluation, inference, `mmolre models` and the CLI's `--model` choices all go through this file, so
adding a model is one new file under `mmolre/models/` with `@register_model` on its class; nothing else lists it.

A model is an `nn.Module` built from its own config dataclass (which has `input_dims` and `tasks` fields, like
`MMoLREConfig`). Its `forward(x, mask)` takes, per feature set m, `x[m]` (B, T_m, D_m) and `mask[m]` (B, T_m)
(True where a word or the utterance is present; an utterance-level set is a one-step sequence) and returns a
`ModelOutput`. Labels never enter `forward`; a model whose training needs them beyond the task losses (Self-MM's
unimodal labels) implements `label_loss(self, out: ModelOutput, batch: dict) -> Tensor | None`, which the trainer
calls after the forward pass with the collated batch (`segment_id`, `labels`, ...) and adds to the loss.
Every model also has `set_input_stats(stats)` (training-set mean/std per feature set, see `InputNorm`) and a
`config` attribute holding the config it was built from (what checkpoints record).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..tasks import TaskSpec

Inputs = Literal["word", "utterance", "any"]  # the levels of feature set a model reads


@dataclass
class ModelOutput:
    """What a forward pass returns. `outputs[task]` (B, out_dim): regression value or logits; `aux_loss` a scalar
    the trainer adds to the task losses (0 when the model has none); the weights explain a prediction where the
    model has them (empty dicts where it does not)."""

    outputs: dict[str, Tensor]
    aux_loss: Tensor
    word_weights: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # task -> set -> (B, T)
    modality_weights: dict[str, Tensor] = field(default_factory=dict)  # task -> (B, M)
    extras: dict[str, Tensor] = field(default_factory=dict)  # model-specific tensors its label_loss reads


@dataclass(frozen=True)
class ModelInfo:
    """One line of `mmolre models`: who the model is, what it reads, where its defaults come from."""

    name: str
    cls: type[nn.Module]
    config: type  # the config dataclass: config(input_dims=..., tasks=..., **hyperparameters)
    paper: str  # "Zadeh et al. 2017, Tensor Fusion Network for Multimodal Sentiment Analysis (EMNLP)"
    inputs: Inputs = "any"
    defaults_from: str = ""  # where the default hyperparameters come from (paper table, MMSA config file)
    summary: str = ""

    def to_dict(self, n_parameters: int | None = None) -> dict[str, Any]:
        d = {"name": self.name, "paper": self.paper, "inputs": self.inputs, "defaults_from": self.defaults_from,
             "summary": self.summary}
        if n_parameters is not None:
            d["parameters"] = n_parameters
        return d


_MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, *, config: type, paper: str, inputs: Inputs = "any", defaults_from: str = "",
                   summary: str = "") -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: `@register_model("tfn", config=TFNConfig, paper=...)` makes the class `--model tfn`."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS and _MODELS[name].cls is not cls:
            raise ValueError(f"model {name!r} is registered twice ({_MODELS[name].cls.__qualname__}, {cls.__qualname__})")
        _MODELS[name] = ModelInfo(name, cls, config, paper, inputs, defaults_from, summary or (cls.__doc__ or "").split("\n")[0])
        return cls

    return add


def _import_builtin() -> None:
    """Every module of mmolre.models (and mmolre.model, mmolre.baselines) registers its models on import: no list to keep."""
    importlib.import_module("mmolre.model")
    importlib.import_module("mmolre.baselines")
    pkg = importlib.import_module("mmolre.models")
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_") and mod.name != "contract":
            importlib.import_module(f"mmolre.models.{mod.name}")


def models() -> dict[str, ModelInfo]:
    """Every registered model by name, in registration order."""
    _import_builtin()
    return dict(_MODELS)


def model_info(name: str) -> ModelInfo:
    known = models()
    if name not in known:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(known)}")
    return known[name]


def model_config(name: str, input_dims: dict[str, int], tasks: tuple[Any, ...], **hyper: Any) -> Any:
    """The named model's config for these inputs and tasks; `hyper` overrides its defaults (unknown names refused)."""
    return config_from_values(model_info(name).config, {**hyper, "input_dims": input_dims, "tasks": tasks},
                              f"model {name!r} has no setting(s)")


PLACED = ("input_dims", "tasks")  # fields the store decides, never hyperparameters


def config_to_dict(config: Any) -> dict[str, Any]:
    """A model config as JSON-ready values (tasks as dicts, tuples as lists): what checkpoints and config.json hold."""
    d = dataclasses.asdict(config)
    d["tasks"] = [t.to_dict() for t in config.tasks]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_from_values(config_cls: type, values: dict[str, Any], refusal: str) -> Any:
    """`config_cls` from plain values (`config_to_dict`'s, a YAML file's): lists become the tuples a field declares,
    task dicts TaskSpecs. A name the class has no field for is refused: `{refusal} NAMES (has: its hyperparameters)`.
    The one reader of model configs: the registry, `model_config` and each config class's `from_dict` call it."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{refusal} {', '.join(sorted(unknown))} (has: {', '.join(sorted(known - set(PLACED)))})")
    hints = typing.get_type_hints(config_cls)
    values = {k: _typed(v, hints.get(k)) for k, v in values.items()}
    if "input_dims" in values:
        values["input_dims"] = dict(values["input_dims"])
    if "tasks" in values:
        values["tasks"] = tuple(t if isinstance(t, TaskSpec) else TaskSpec.from_dict(t) for t in values["tasks"])
    return config_cls(**values)


class ModelConfig:
    """What every model's config dataclass shares: its modalities and the JSON round trip (`config_to_dict`,
    `config_from_values`). `refusal_name` names the config in the refusal of an unknown setting."""

    refusal_name = ""  # "" : the class's own name

    @property
    def modalities(self) -> list[str]:
        return list(self.input_dims)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        return config_from_values(cls, d, f"unknown {cls.refusal_name or cls.__name__} setting(s):")


def _typed(value: Any, hint: Any) -> Any:
    """Lists read from JSON/YAML become tuples where the field is a tuple (ranks, kernel sizes)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, list) and any(typing.get_origin(a) is tuple or a is tuple for a in args):
        return tuple(value)
    return value


def assemble_model(name: str, config: Any) -> nn.Module:
    """The one way training and inference build a model: registered class + its config."""
    info = model_info(name)
    if not isinstance(config, info.config):
        raise TypeError(f"model {name!r} takes a {info.config.__name__}, not a {type(config).__name__}")
    return info.cls(config)


def label_loss(model: nn.Module, out: ModelOutput, batch: dict[str, Any]) -> Tensor | None:
    """The model's `label_loss(out, batch)` where it has one, else None: what the trainer adds, and what a wrapper
    (`VideoContext`, `FinetunedText`) passes on from the model inside it."""
    fn = getattr(model, "label_loss", None)
    return fn(out, batch) if fn is not None else None


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


class InputNorm(nn.Module):
    """Training-set mean and std of one feature set, kept as buffers so inference standardises the same way;
    absent steps (mask False) are left at zero."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, T, D)
        x = (x - self.mean) / self.std.clamp(min=1e-6)
        return torch.where(mask[..., None], x, torch.zeros_like(x))


def set_input_stats(norms: nn.ModuleDict, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Copy the training set's (mean, std) per feature set into a model's InputNorm modules."""
    for m, (mean, std) in stats.items():
        if m in norms:
            norms[m].mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            norms[m].std.copy_(torch.as_tensor(std, dtype=torch.float32))
