"""What a training run is made of before its first step: the feature sets and tasks it reads (checked against the
store), the model, its data and optimiser, how it selects the epoch it keeps, and the state of its epoch loop."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from feature_schemas import Store, StoreError
from feature_schemas.storage import display

from .config import TrainConfig
from .context import wrap_in_context
from .data import SegmentLabels, StoreDataset, VideoLoader, feature_stats_and_coverage
from .distributed import DistContext
from .errors import RunError
from .losses import TaskWeighting, TrainStep
from .metrics import lower_is_better
from .models.contract import assemble_model
from .optimisation import label_weights, lr_lambdas, make_optimizer, seed_everything
from .registry import changes, placed, sized_for
from .tasks import TaskSpec, infer_tasks
from .text_encoder import TextSetup, text_encoder_setup

log = logging.getLogger("mmolre.train")


def covered_feature_sets(store: Path | str, feature_sets: list[str]) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """The feature sets that cover at least one word of the train split, the ones left out (with why), and the
    train split's input statistics of those kept. A modality with no usable word (a text-only store's audio, a
    face set where no face was found) cannot be learnt from and would only add noise and parameters."""
    stats, covered = feature_stats_and_coverage(store, "train", feature_sets)
    dropped = {m: "covers no word of the train split" for m in feature_sets if covered[m] == 0}
    kept = [m for m in feature_sets if m not in dropped]
    if not kept:
        raise StoreError(f"{display(store)}: none of the feature sets {', '.join(feature_sets)} covers a word of the train split; "
                         "nothing to learn from (check the build's failures with `mmolre inspect`)")
    for m, why in dropped.items():
        log.warning("%s: leaving out feature set %r: it %s", display(store), m, why)
    return kept, dropped, {m: stats[m] for m in kept}


def label_warnings(store_obj: Store, tasks: tuple[TaskSpec, ...]) -> list[str]:
    """What the labels of each split make undefined or unlearnable: no labels, one constant value, one class."""
    out: list[str] = []
    for split in store_obj.splits():
        labels = SegmentLabels(store_obj, split, tasks).values
        for t in tasks:
            y = labels[t.name]
            where = f"{t.name} labels of the {split} split"
            if t.kind == "regression":
                y = y[np.isfinite(y)]
                if not len(y):
                    out.append(f"no {where}: its {t.name} metrics are undefined (n/a)")
                elif np.all(y == y[0]):
                    out.append(f"every one of the {len(y)} {where} is {float(y[0]):g}: correlation and F1 are undefined (n/a)")
            elif t.kind == "multilabel":
                one = [c for j, c in enumerate(t.classes)
                       if len(col := y[np.isfinite(y[:, j]), j]) and (col.min() == col.max())]
                if one:
                    out.append(f"{', '.join(one)}: one class only in the {where} (all present or all absent): "
                               "F1 and weighted accuracy are undefined (n/a)")
            else:
                present = sorted({t.classes[i] for i in y[y >= 0]})
                if len(present) < 2:
                    out.append(f"the {where} have {'only the class ' + present[0] if present else 'no class'}: F1 is undefined (n/a)")
    for w in out:
        log.warning("%s: %s", store_obj.path, w)
    return out


def check_context(store_obj: Store, feature_sets: list[str], cfg: TrainConfig, ctx: DistContext) -> None:
    """context=true runs a GRU over each video's utterance-level vectors: word-level sets, a fine-tuned text
    encoder and distributed training (videos are not sharded across ranks) are refused up front."""
    words = [m for m in feature_sets if m not in store_obj.utterance_sets()]
    if words:
        raise RunError(f"{store_obj.path}: context=true needs utterance-level feature sets only; {', '.join(words)} "
                       "are word-level (set feature_sets to the store's utterance-level sets)")
    if cfg.text_encoder != "frozen":
        raise RunError(f"{store_obj.path}: context=true does not combine with text_encoder={cfg.text_encoder}")
    if ctx.world_size > 1:
        raise RunError(f"{store_obj.path}: context=true trains on one process only (world size {ctx.world_size})")


@dataclass
class ModelSetup:
    """The model to train and what it reads, decided from the store and the configuration."""

    store: Path | str  # as given (a URL may carry credentials: messages show store_obj.location)
    store_obj: Store
    splits: list[str]
    feature_sets: list[str]
    dropped: dict[str, str]  # feature sets left out, and why
    arch: Any  # the architecture actually trained (the model's config dataclass)
    cfg: TrainConfig  # as config.json and the checkpoints record it
    net: torch.nn.Module
    text: TextSetup | None  # the fine-tuned text encoder, None when frozen
    notes: list[str]  # warnings for results.json
    defaults: list[str] = field(default_factory=list)  # settings decided from the store (results.json, report.md)

    @property
    def dataset_kwargs(self) -> dict[str, Any]:
        """What every StoreDataset of the run needs (the tokenizer, when the text encoder is fine-tuned)."""
        return self.text.dataset_kwargs() if self.text is not None else {}


@dataclass
class Optimisation:
    """Data, loss, optimiser and schedule of one run."""

    train_ds: StoreDataset
    valid_ds: StoreDataset | None
    video_loader: VideoLoader | None  # context models read whole videos
    step_module: TrainStep
    optimizer: torch.optim.Optimizer
    scheduler: Any  # LambdaLR
    trainer: torch.nn.Module  # step_module, or its DistributedDataParallel wrapper


@dataclass
class Selection:
    """How the epoch kept as best is chosen."""

    select: str
    keep_last: bool  # a fixed number of epochs: the last one is kept, valid is only reported
    minimize: bool
    valid_fit: bool = True  # what the store's manifest says of its valid split (split_use)
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"select_metric": "last" if self.keep_last else self.select, "valid_fit_for_selection": self.valid_fit,
                **({"why": self.why} if self.why else {})}


@dataclass
class TrainState:
    """Where the epoch loop is: what `last.pt` records so a run resumes exactly."""

    epoch: int = 0
    step: int = 0
    best_value: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    select_name: str | None = None  # what selected the best epoch, as results.json says it
    stopped: bool = False  # early-stopped

    @classmethod
    def start(cls, rule: Selection) -> TrainState:
        return cls(best_value=math.inf if rule.minimize else -math.inf)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def build_model_setup(store: Path | str, model_name: str, cfg: TrainConfig, ctx: DistContext) -> ModelSetup:
    """Seed, check the store, pick the feature sets and tasks, and build the model (context and text wrappers)."""
    seed_everything(cfg.seed, cfg.deterministic)
    store_obj = Store(store)
    shown = store_obj.location  # what messages, checkpoints and results.json name: a URL without credentials
    splits = store_obj.splits()
    if "train" not in splits:
        raise StoreError(f"{shown}: no train split (has: {', '.join(splits) or 'none'}); nothing to train on")
    # default: the word-level sets; a store with none (utterance-level only) trains on its utterance-level sets
    feature_sets = list(cfg.feature_sets or store_obj.aligned_sets() or store_obj.utterance_sets())
    tasks = infer_tasks(store_obj, cfg.tasks, cfg.sentiment_target, cfg.emotion_target)
    feature_sets, dropped, stats = covered_feature_sets(store, feature_sets)
    cfg, defaults = store_defaults(store_obj, feature_sets, cfg, ctx)
    text = text_encoder_setup(store_obj, feature_sets, cfg)
    input_dims = {m: store_obj.feature_sets[m].dim for m in feature_sets}
    if text is not None:  # the encoder's pooled word vectors replace the store's text set
        input_dims[text.text_set] = text.hidden_size
    net = assemble_model(model_name, placed(cfg.arch, input_dims, tasks))
    arch = net.config  # as the model resolved it (dense_moe's full ranks)
    if cfg.context:  # arch keeps the store's input dims (what checkpoints check); the wrapper widens its model's
        check_context(store_obj, feature_sets, cfg, ctx)
        net = wrap_in_context(model_name, arch, cfg.context_hidden)
    if text is not None:
        net = text.wrap(net)
    # what config.json and the checkpoints record: the architecture actually trained, loadable with --config
    cfg = replace(cfg, feature_sets=list(feature_sets), tasks=[t.name for t in arch.tasks], arch=arch)
    net.set_input_stats(stats)
    net.to(ctx.device)
    notes = label_warnings(store_obj, arch.tasks) if ctx.is_main else []
    notes += [f"feature set {m!r} left out: it {why}" for m, why in dropped.items()]
    return ModelSetup(store, store_obj, splits, list(feature_sets), dropped, arch, cfg, net, text, notes, defaults)


STEP_BUDGET = 2000  # optimizer steps a default run may take when valid selects (see default_epochs)


def default_epochs(n_train: int, batch_size: int) -> int:
    """Epochs when valid selects: 30, or fewer on a large store, about STEP_BUDGET steps in all (at least 3).
    CMU-MOSI's 1,284 training segments make 41 steps an epoch (30 epochs: 1,230 steps, unchanged). On CMU-MOSEI
    (16,274, 509 steps an epoch) 30 epochs of the cosine schedule overfit: valid Non0 Acc-2 peaked at epoch 4
    (83.4) and fell to 81.0 by the epoch the loss selected (9), level with the ridge floor (81.1); 4 epochs keep
    the schedule's decay inside the epochs that help (BENCHMARKS.md, "plain train")."""
    steps = max(1, math.ceil(n_train / max(1, batch_size)))
    return max(3, min(30, math.ceil(STEP_BUDGET / steps)))


def store_defaults(store: Store, feature_sets: list[str], cfg: TrainConfig, ctx: DistContext) -> tuple[TrainConfig, list[str]]:
    """The settings left to the store, decided: the epochs (a fixed 10 when no valid split can select, else at most
    30 with early stopping, fewer on a large store: `default_epochs`), context (on for utterance-level sets with several utterances per video), and the
    model's size (an arch left at its defaults follows the training set's size). Returns the configuration and
    one line per decision, for results.json and report.md."""
    said: list[str] = []
    n_train = store.manifest.rows("segments", "train")
    valid_fit, _ = store.manifest.fit_for_selection("valid")
    fixed = cfg.select_metric == "last" or "valid" not in store.splits() or (not valid_fit and cfg.select_metric == "auto")
    if cfg.epochs is None:
        cfg = replace(cfg, epochs=10 if fixed else default_epochs(n_train, cfg.batch_size))
        said.append(f"epochs: a fixed {cfg.epochs}, the last kept (no valid split fit to select on)" if fixed else
                    f"epochs: at most {cfg.epochs} (about {STEP_BUDGET:,} steps of {cfg.batch_size} for {n_train:,} "
                    f"training segments), the best on valid kept (early stopping, patience {cfg.patience})")
    if cfg.context is None:
        per_video = segments_per_video(store)
        on = (ctx.world_size == 1 and cfg.text_encoder == "frozen" and per_video >= 2
              and all(m in store.utterance_sets() for m in feature_sets))
        cfg = replace(cfg, context=on)
        if on:
            said.append(f"context: on (utterance-level sets only, {per_video:.1f} training utterances per video: each "
                        "utterance is read with its video's others, bc-LSTM style; --set context=false to turn it off)")
    sized = sized_for(cfg.model, cfg.arch, n_train)
    if sized != cfg.arch:
        said.append(f"model size for {n_train:,} training segments: {changes(cfg.arch, sized)} (an arch differing from the defaults is kept as given)")
        cfg = replace(cfg, arch=sized)
    for line in said:
        log.info("%s: %s", store.location, line)
    return cfg, said


def segments_per_video(store: Store, split: str = "train") -> float:
    """Mean segments per video of a split (segments table `video_id`): how much context a video gives."""
    ids = store.segments(split, columns=["video_id"]).column("video_id").to_pylist()
    return len(ids) / max(1, len(set(ids)))


def make_optimisation(m: ModelSetup, ctx: DistContext) -> Optimisation:
    """The datasets (this rank's share of train), the loss with its task weighting, AdamW and its schedule."""
    store, cfg, arch = m.store, m.cfg, m.arch
    train_ds = StoreDataset(
        store, "train", m.feature_sets, arch.tasks, cfg.max_len, cfg.truncate, shuffle=True,
        shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, **m.dataset_kwargs,
    )
    valid_ds = (StoreDataset(store, "valid", m.feature_sets, arch.tasks, cfg.max_len, cfg.truncate, **m.dataset_kwargs)
                if "valid" in m.splits else None)
    video_loader = None
    if cfg.context:
        video_loader = VideoLoader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed)
        if video_loader.mean_segments_per_video < 2:
            m.notes.append(f"context=true, but the train split has {video_loader.mean_segments_per_video:.2f} segments per "
                           "video on average: little context to learn from (are video ids shared by segments?)")
            log.warning("%s: %s", display(store), m.notes[-1])
    pos_w, cls_w = label_weights(train_ds, cfg)
    weighting = TaskWeighting(arch.tasks, cfg.task_weighting, cfg.task_weights)
    step_module = TrainStep(m.net, weighting, cfg.sentiment_loss, pos_w, cls_w).to(ctx.device)
    optimizer = make_optimizer(step_module, cfg)
    steps_per_epoch = max(1, len(video_loader) if video_loader is not None else train_ds.min_batches_per_epoch(cfg.batch_size, cfg.num_workers))
    total_steps = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambdas(optimizer, total_steps, cfg))
    device = ctx.device
    trainer = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None) if ctx.distributed else step_module
    return Optimisation(train_ds, valid_ds, video_loader, step_module, optimizer, scheduler, trainer)


def auto_select_metric(tasks: tuple[TaskSpec, ...] | list[TaskSpec]) -> str:
    """`select_metric: auto` for these tasks: the mean weighted F1 when every task is single-label classification
    (MELD's measure; the summed cross-entropy follows the frequent classes: on MELD it kept epoch 3 where both
    wF1s peaked at epoch 2), else `auto`, the summed validation loss (for MAE-trained regression, its measure)."""
    if tasks and all(t.kind == "multiclass" for t in tasks):
        return ",".join(f"{t.name}/wf1" for t in tasks)
    return "auto"


def selection_rule(m: ModelSetup, has_valid: bool) -> Selection:
    """The selection metric and its direction; without a valid split the last epoch is kept (noted, as is a
    missing test split)."""
    store, select = m.store, m.cfg.select_metric
    valid_fit, why = m.store_obj.manifest.fit_for_selection("valid")
    if has_valid and not valid_fit:  # the store's recipe says valid cannot be trusted to select on
        note = None
        if select == "auto":
            select = "last"
            note = (f"the store marks its valid split unfit for model selection ({why}): trained a fixed "
                    f"{m.cfg.epochs} epochs and kept the last (select_metric=last); valid is reported only")
        elif select != "last":
            note = (f"select_metric={select} selects on a valid split the store marks unfit for it ({why}): "
                    "the test figures of the epoch it picks are optimistic")
        if note:
            m.notes.append(note)
            log.warning("%s: %s", display(store), note)
    if select == "auto" and has_valid:
        select = auto_select_metric(m.arch.tasks)
    keep_last = select == "last"
    minimize = lower_is_better(select if select not in ("auto", "last") else "loss")
    if not has_valid:
        m.notes.append("no valid split: model selection keeps the last epoch (selects on train_loss"
                       + (f", not {select}" if select not in ("auto", "loss") else "") + ")")
        log.warning("%s: %s", display(store), m.notes[-1])
        minimize = True
    if "test" not in m.splits:
        m.notes.append("no test split: the run is not tested (no test metrics)")
        log.warning("%s: %s", display(store), m.notes[-1])
    return Selection(select, keep_last, minimize, valid_fit, why)
