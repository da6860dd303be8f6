"""Training: `train(store, out, model, config) -> results`, the same code on one CPU, one GPU or many (torchrun).

AdamW with linear warm-up and cosine decay, gradient clipping, task-loss weighting, early stopping on a
validation metric, bf16 autocast on CUDA, atomic checkpoints (`last.pt` every epoch, `best.pt` on improvement)
that resume exactly, then the best checkpoint on the test split, `results.json`, plots and `report.md`.

    python -m mmolre.train STORE OUT [--model mmolre] [--config cfg.yaml] [--set lr=1e-3 arch.d_model=64]
    torchrun --nproc_per_node 4 -m mmolre.train STORE OUT ...
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from feature_schemas import Store, StoreError, atomic_write_text
from feature_schemas.storage import display, is_url

from .baselines import count_parameters, legacy_name
from .checkpoint import check_inputs, load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .context import as_videos, wrap_in_context
from .data import SegmentLabels, StoreDataset, VideoLoader, feature_stats_and_coverage, make_loader
from .distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_flag,
    gather_objects,
    init_from_env,
    shutdown,
)
from .errors import RunError
from .evaluation import (
    amp_enabled,
    autocast,
    flatten,
    predict_split,
    predictions_frame,
    results_json,
    score,
    selection_value,
    to_device,
)
from .losses import TaskWeighting, TrainStep
from .metrics import lower_is_better
from .models.contract import assemble_model
from .registry import config_to_dict, placed
from .report import write_plots, write_report
from .run_dir import claim_run_dir
from .tasks import TaskSpec, infer_tasks
from .text_encoder import (
    TOKENIZER_DIR,
    FinetunedText,
    check_real_words,
    freeze_first_layers,
    load_encoder,
    load_tokenizer,
    resolve_text_model,
    text_set_of,
)

__all__ = ["main", "seed_everything", "train", "warmup_cosine"]

log = logging.getLogger("mmolre.train")

CHECKPOINT_VERSION = 1


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def warmup_cosine(total_steps: int, warmup_ratio: float, min_ratio: float):
    """lr multiplier: linear from 0 to 1 over the warm-up, then cosine down to min_ratio at total_steps."""
    warmup = max(1, int(round(total_steps * warmup_ratio))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _optimizer(module: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; biases, norms, gates and scalar parameters are not decayed. A fine-tuned text encoder's parameters
    form their own groups (`encoder: True`) at `encoder_lr`: a pretrained encoder wants a much lower rate."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {(e, d): [] for e in (False, True) for d in (True, False)}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        decayed = p.ndim >= 2 and "norm" not in name.lower()
        groups[("text_encoder." in name, decayed)].append(p)
    out = [{"params": ps, "weight_decay": cfg.weight_decay if d else 0.0, "encoder": e,
            **({"lr": cfg.encoder_lr} if e else {})} for (e, d), ps in groups.items() if ps or not e]
    return torch.optim.AdamW(out, lr=cfg.lr, betas=(0.9, 0.999))


def _lr_lambdas(optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig) -> list[Any]:
    """One schedule per group: the model's warm-up, or the encoder's own (`encoder_warmup`)."""
    model = warmup_cosine(total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
    encoder = warmup_cosine(total_steps, cfg.encoder_warmup, cfg.min_lr_ratio)
    return [encoder if g.get("encoder") else model for g in optimizer.param_groups]


def text_encoder_setup(store_obj: Store, feature_sets: list[str], cfg: TrainConfig) -> tuple[Any, Any, str] | None:
    """For text_encoder=finetune: (pretrained encoder, tokenizer, the text set it replaces); None when frozen."""
    if cfg.text_encoder != "finetune":
        return None
    text_set = text_set_of(store_obj, feature_sets)
    if text_set not in feature_sets:
        raise RunError(f"{store_obj.path}: text_encoder=finetune replaces the store's word-level text set, and the sets "
                       f"used ({', '.join(feature_sets)}) have none; add one to feature_sets or use text_encoder=frozen")
    check_real_words(store_obj)
    path = resolve_text_model(cfg.text_model)
    tokenizer, encoder = load_tokenizer(path), load_encoder(path)
    for name, p in encoder.named_parameters():
        if name.startswith("pooler."):  # its output is not used: no gradient (DDP would wait for one)
            p.requires_grad_(False)
    freeze_first_layers(encoder, cfg.freeze_layers)
    if cfg.grad_checkpointing:
        enable = getattr(encoder, "activation_checkpointing_enable", None) or encoder.gradient_checkpointing_enable  # renamed in transformers 5
        enable()
    return encoder, tokenizer, text_set


def save_tokenizer(out: Path, tokenizer: Any, encoder: Any) -> Path:
    """RUN/tokenizer/: the tokenizer and the encoder's config, so `predict` rebuilds the encoder (weights: best.pt)."""
    folder = out / TOKENIZER_DIR
    tokenizer.save_pretrained(str(folder))
    encoder.config.save_pretrained(str(folder))
    return folder


def _label_weights(ds: StoreDataset, cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    pos, cls = {}, {}
    for t in ds.tasks:
        y = ds.labels.values[t.name]
        if t.kind == "multilabel" and cfg.pos_weight:
            prevalence = np.nanmean(y, axis=0)
            pos[t.name] = torch.tensor(np.clip((1 - prevalence) / np.maximum(prevalence, 1e-3), 1.0, 10.0), dtype=torch.float32)
        if t.kind == "multiclass" and cfg.class_weights:
            counts = np.bincount(y[y >= 0], minlength=len(t.classes)).astype(np.float64)
            w = counts.sum() / np.maximum(counts, 1) / len(t.classes)
            cls[t.name] = torch.tensor(w, dtype=torch.float32)
    return pos, cls


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


def _param_checksum(module: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum().item() for p in module.parameters()))


def train(store: str | Path, out: str | Path, model: str | None = None, config: TrainConfig | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Train `model` (any registered model; default: `config.model`) on `store`, writing checkpoints, results.json,
    plots and report.md into `out` (checked and locked first: `mmolre.run_dir`; `overwrite` replaces another run).

    `store` may be a URL (`s3://bucket/prefix`): batches stream from object storage, nothing is copied locally.
    Returns the results dict (also on non-main distributed ranks, where it lacks evaluation)."""
    cfg = config or TrainConfig()
    if model is not None:
        cfg = cfg.with_model(model)
    model = cfg.model
    store, out = (store if is_url(store) else Path(store).resolve()), Path(out)
    ctx = init_from_env(cfg.device)
    try:
        with claim_run_dir(out, model, cfg.to_dict(), store, overwrite, lock=ctx.is_main):
            return _train(store, out, model, cfg, ctx)
    finally:
        shutdown(ctx)


@dataclass
class _Model:
    """The model to train and what it reads, decided from the store and the configuration."""

    store_obj: Store
    splits: list[str]
    feature_sets: list[str]
    dropped: dict[str, str]  # feature sets left out, and why
    arch: Any  # the architecture actually trained (the model's config dataclass)
    cfg: TrainConfig  # as config.json and the checkpoints record it
    net: torch.nn.Module
    text: Any  # (encoder, tokenizer, text set) when the text encoder is fine-tuned, else None
    ds_text: dict[str, Any]  # what the datasets need to tokenize for it
    notes: list[str]  # warnings for results.json


@dataclass
class _Optimisation:
    """Data, loss, optimiser and schedule of one run."""

    train_ds: StoreDataset
    valid_ds: StoreDataset | None
    video_loader: VideoLoader | None  # context models read whole videos
    step_module: TrainStep
    optimizer: torch.optim.Optimizer
    scheduler: Any  # LambdaLR
    trainer: torch.nn.Module  # step_module, or its DistributedDataParallel wrapper


@dataclass
class _Selection:
    """How the epoch kept as best is chosen."""

    select: str
    keep_last: bool  # a fixed number of epochs: the last one is kept, valid is only reported
    minimize: bool
    valid_fit: bool = True  # what the store's manifest says of its valid split (split_use)
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"select_metric": "last" if self.keep_last else self.select, "valid_fit_for_selection": self.valid_fit,
                **({"why": self.why} if self.why else {})}


def _build_model(store: Path | str, model_name: str, cfg: TrainConfig, ctx: DistContext) -> _Model:
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
    text = text_encoder_setup(store_obj, feature_sets, cfg)
    input_dims = {m: store_obj.feature_sets[m].dim for m in feature_sets}
    if text is not None:  # the encoder's pooled word vectors replace the store's text set
        input_dims[text[2]] = int(text[0].config.hidden_size)
    net = assemble_model(model_name, placed(cfg.arch, input_dims, tasks))
    arch = net.config  # as the model resolved it (dense_moe's full ranks)
    if cfg.context:  # arch keeps the store's input dims (what checkpoints check); the wrapper widens its model's
        check_context(store_obj, feature_sets, cfg, ctx)
        net = wrap_in_context(model_name, arch, cfg.context_hidden)
    if text is not None:
        net = FinetunedText(net, text[0], text[2])
    ds_text = {"tokenizer": text[1], "text_set": text[2], "max_tokens": cfg.max_tokens} if text is not None else {}
    # what config.json and the checkpoints record: the architecture actually trained, loadable with --config
    cfg = replace(cfg, feature_sets=list(feature_sets), tasks=[t.name for t in arch.tasks], arch=arch)
    net.set_input_stats(stats)
    net.to(ctx.device)
    notes = label_warnings(store_obj, arch.tasks) if ctx.is_main else []
    notes += [f"feature set {m!r} left out: it {why}" for m, why in dropped.items()]
    return _Model(store_obj, splits, list(feature_sets), dropped, arch, cfg, net, text, ds_text, notes)


def _optimisation(store: Path | str, m: _Model, ctx: DistContext) -> _Optimisation:
    """The datasets (this rank's share of train), the loss with its task weighting, AdamW and its schedule."""
    cfg, arch = m.cfg, m.arch
    train_ds = StoreDataset(
        store, "train", m.feature_sets, arch.tasks, cfg.max_len, cfg.truncate, shuffle=True,
        shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, **m.ds_text,
    )
    valid_ds = (StoreDataset(store, "valid", m.feature_sets, arch.tasks, cfg.max_len, cfg.truncate, **m.ds_text)
                if "valid" in m.splits else None)
    video_loader = None
    if cfg.context:
        video_loader = VideoLoader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed)
        if video_loader.mean_segments_per_video < 2:
            m.notes.append(f"context=true, but the train split has {video_loader.mean_segments_per_video:.2f} segments per "
                           "video on average: little context to learn from (are video ids shared by segments?)")
            log.warning("%s: %s", display(store), m.notes[-1])
    pos_w, cls_w = _label_weights(train_ds, cfg)
    weighting = TaskWeighting(arch.tasks, cfg.task_weighting, cfg.task_weights)
    step_module = TrainStep(m.net, weighting, cfg.sentiment_loss, pos_w, cls_w).to(ctx.device)
    optimizer = _optimizer(step_module, cfg)
    steps_per_epoch = max(1, len(video_loader) if video_loader is not None else train_ds.min_batches_per_epoch(cfg.batch_size, cfg.num_workers))
    total_steps = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambdas(optimizer, total_steps, cfg))
    device = ctx.device
    trainer = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None) if ctx.distributed else step_module
    return _Optimisation(train_ds, valid_ds, video_loader, step_module, optimizer, scheduler, trainer)


def _selection(store: Path | str, m: _Model, has_valid: bool) -> _Selection:
    """The selection metric and its direction; without a valid split the last epoch is kept (noted, as is a
    missing test split)."""
    select = m.cfg.select_metric
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
    return _Selection(select, keep_last, minimize, valid_fit, why)


def _resume(last_path: Path, store: Path | str, model_name: str, m: _Model, o: _Optimisation,
            ctx: DistContext) -> dict[str, Any] | None:
    """The loop's state from `last.pt` (weights, optimiser, schedule and RNGs restored), or None to start fresh."""
    if not (m.cfg.resume and last_path.is_file()):
        return None
    ck = load_checkpoint(last_path, map_location=ctx.device)
    if legacy_name(str(ck.get("model_name")))[0] != model_name:
        raise RunError(f"{last_path}: a checkpoint of {ck.get('model_name')!r}, not {model_name!r}; use another output directory")
    check_inputs(last_path, ck, m.feature_sets, m.arch.input_dims, m.store_obj.location)
    load_weights(o.step_module, ck["train_step"], last_path)
    o.optimizer.load_state_dict(ck["optimizer"])
    o.scheduler.load_state_dict(ck["scheduler"])
    rngs = ck["rng"]
    set_rng_state(rngs[ctx.rank] if ctx.rank < len(rngs) else rngs[0])
    log.info("resumed %s at epoch %d", last_path, ck["state"]["epoch"])
    return dict(ck["state"])


def _train_epoch(m: _Model, o: _Optimisation, ctx: DistContext, state: dict[str, Any], show: bool) -> tuple[dict[str, Any], int]:
    """One epoch of optimisation steps; returns its history row (losses, lr, throughput) and its batch count."""
    cfg, arch, device, epoch = m.cfg, m.arch, ctx.device, state["epoch"]
    o.train_ds.set_epoch(epoch)
    n_batches = o.train_ds.min_batches_per_epoch(cfg.batch_size, cfg.num_workers) if o.video_loader is None else len(o.video_loader)
    if cfg.max_steps is not None:
        n_batches = min(n_batches, cfg.max_steps - state["step"])
    loader: Any = make_loader(o.train_ds, cfg.batch_size, cfg.num_workers, pin_memory=device.type == "cuda")
    if o.video_loader is not None:
        o.video_loader.set_epoch(epoch)
        loader = o.video_loader
    o.step_module.train()
    sums = torch.zeros(len(arch.tasks) + 2, dtype=torch.float64, device=device)  # total, tasks..., aux
    samples = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    bar = tqdm(islice(loader, n_batches), total=n_batches, disable=not show, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for batch in bar:
        x, mask, labels = to_device(as_videos(batch), device)
        with autocast(device, cfg.amp):
            total, parts = o.trainer(x, mask, labels, {"segment_id": batch["segment_id"]})
        o.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(o.step_module.parameters(), cfg.grad_clip)
        o.optimizer.step()
        o.scheduler.step()
        state["step"] += 1
        samples += len(batch["segment_id"])
        sums += torch.stack([total.detach().double()] + [parts[t.name].double() for t in arch.tasks] + [parts["aux"].double()])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    [global_samples] = all_reduce_sum(ctx, [float(samples)])
    means = (sums / max(1, n_batches)).tolist()
    row: dict[str, Any] = {
        "epoch": epoch + 1, "step": state["step"], "lr": o.scheduler.get_last_lr()[0], "train_loss": means[0],
        **{f"train_loss/{t.name}": means[i + 1] for i, t in enumerate(arch.tasks)}, "train_aux": means[-1],
        "train_samples": global_samples, "train_seconds": seconds, "samples_per_s": global_samples / max(seconds, 1e-9),
    }
    return row, n_batches


def _judge_epoch(m: _Model, o: _Optimisation, rule: _Selection, ctx: DistContext, state: dict[str, Any],
                 row: dict[str, Any], show: bool) -> tuple[bool, bool]:
    """(improved, stop): score valid (on the main rank), keep the best epoch, count epochs without improvement."""
    if not ctx.is_main:
        return False, False
    cfg = m.cfg
    if o.valid_ds is not None:
        metrics = score(predict_split(m.net, o.valid_ds, ctx.device, max(64, cfg.batch_size), cfg.num_workers, cfg.amp,
                                      cfg.sentiment_loss), resamples=0)
        row.update({f"valid/{k}": v for k, v in flatten(metrics).items()})
        name, value = selection_value(metrics, "loss" if rule.keep_last else rule.select)
        name = "last epoch (valid loss shown)" if rule.keep_last else name
    else:  # no validation split: the last epoch is the one kept
        name, value = "train_loss", row["train_loss"]
    row["select"] = value
    better = value < state["best_value"] if rule.minimize else value > state["best_value"]
    improved = o.valid_ds is None or rule.keep_last or better or state["best_epoch"] < 0
    if improved:
        state.update(best_value=value, best_epoch=row["epoch"], bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    stop = cfg.patience > 0 and o.valid_ds is not None and state["bad_epochs"] >= cfg.patience
    state["select_name"] = name
    _log_epoch(row, show, improved)
    return improved, stop


def _results(store: Path | str, out: Path, model_name: str, m: _Model, ctx: DistContext, state: dict[str, Any],
             timing: dict[str, float], status: str, rule: _Selection) -> dict[str, Any]:
    """Throughput, parameter checksums and, on the main rank, the test scores and files (`_finish`)."""
    cfg, device = m.cfg, ctx.device
    results: dict[str, Any] = {"model": model_name, "status": status, "world_size": ctx.world_size, "rank": ctx.rank}
    throughput = {
        "train_samples_per_s": timing["samples"] / max(timing["seconds"], 1e-9),
        "step_time_s": timing["seconds"] / max(timing["steps"], 1),
        "steps": int(timing["steps"]),
        "batch_size_per_rank": cfg.batch_size,
    }
    if device.type == "cuda":
        throughput["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    results["param_checksums"] = gather_objects(ctx, _param_checksum(m.net))  # equal on every rank when DDP kept them in sync
    if ctx.is_main:
        extra = {"world_size": ctx.world_size, "param_checksums": results["param_checksums"], "warnings": m.notes,
                 "dropped_feature_sets": m.dropped, "selection": rule.to_dict()}
        results.update(_finish(store, m.store_obj, out, model_name, cfg, m.net, state, m.feature_sets, m.arch, device,
                               throughput, status, extra, m.ds_text))
    return results


def _train(store: Path | str, out: Path, model_name: str, cfg: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    """Build the model, then epochs of training, scoring and checkpointing until done, stopped early or paused."""
    m = _build_model(store, model_name, cfg, ctx)
    cfg, device = m.cfg, ctx.device
    o = _optimisation(store, m, ctx)
    rule = _selection(store, m, o.valid_ds is not None)
    state = {"epoch": 0, "step": 0, "best_value": math.inf if rule.minimize else -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    last_path, best_path = out / "last.pt", out / "best.pt"
    state = _resume(last_path, store, model_name, m, o, ctx) or state
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
        if m.text is not None:
            save_tokenizer(out, m.text[1], m.text[0])
    show = cfg.progress and ctx.is_main
    timing = {"samples": 0.0, "seconds": 0.0, "steps": 0.0}
    epochs_this_run = 0
    status = "completed"
    meta = {
        "model_name": model_name, "arch": config_to_dict(m.arch), "feature_sets": m.feature_sets, "store": m.store_obj.location,
        "max_len": cfg.max_len, "truncate": cfg.truncate, "checkpoint_version": CHECKPOINT_VERSION,
        "text_encoder": cfg.text_encoder, "text_set": m.text[2] if m.text is not None else None,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    while state["epoch"] < cfg.epochs and not state.get("stopped"):
        if cfg.stop_after_epochs is not None and epochs_this_run >= cfg.stop_after_epochs:
            status = "paused"
            break
        if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
            break
        row, n_batches = _train_epoch(m, o, ctx, state, show)
        timing["samples"] += row["train_samples"]
        timing["seconds"] += row["train_seconds"]
        timing["steps"] += n_batches
        improved, stop = _judge_epoch(m, o, rule, ctx, state, row, show)
        state["history"].append(row)
        state["epoch"] += 1
        epochs_this_run += 1
        stop = broadcast_flag(ctx, stop)
        state["stopped"] = stop
        rngs = gather_objects(ctx, rng_state())
        if ctx.is_main:
            payload = {
                **meta, "train_step": o.step_module.state_dict(), "optimizer": o.optimizer.state_dict(),
                "scheduler": o.scheduler.state_dict(), "state": state, "rng": rngs, "config": cfg.to_dict(),
            }
            if improved:
                save_checkpoint(best_path, {**meta, "model": m.net.state_dict(), "epoch": state["epoch"], "config": cfg.to_dict(), "metrics": row})
            save_checkpoint(last_path, payload)
        if stop:
            break

    if state.get("stopped"):
        status = "early_stopped"
    results = _results(store, out, model_name, m, ctx, state, timing, status, rule)
    barrier(ctx)
    return results


def _log_epoch(row: dict[str, Any], show: bool, improved: bool) -> None:
    keys = [k for k in row if k.startswith("valid/") and k.split("/")[-1] in ("loss", "mae", "corr", "non0_acc2", "wf1_mean", "wacc_mean", "wf1", "acc")]
    text = f"epoch {row['epoch']}: train {row['train_loss']:.4f} " + " ".join(f"{k[6:]}={_num(row[k])}" for k in keys) + (" *" if improved else "")
    if show:
        tqdm.write(text)
    else:
        log.info(text)


def _num(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def _finish(
    store: Path | str, store_obj: Store, out: Path, model_name: str, cfg: TrainConfig, net: torch.nn.Module, state: dict[str, Any],
    feature_sets: list[str], arch: Any, device: torch.device, throughput: dict[str, Any], status: str, extra: dict[str, Any],
    ds_text: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the best checkpoint on valid and test, write predictions, results.json, plots and report.md."""
    results: dict[str, Any] = {
        "model": model_name, "run": str(out.resolve()),
        "store": {"path": store_obj.location, "manifest_sha256": store_obj.manifest_sha256},
        "store_name": store_obj.manifest.name, "feature_sets": feature_sets, "arch": config_to_dict(arch),
        "splits": {s: store_obj.manifest.rows("segments", s) for s in store_obj.splits()},
        "tasks": [t.to_dict() for t in arch.tasks], "config": cfg.to_dict(), "parameters": count_parameters(net),
        "params": {"total": sum(p.numel() for p in net.parameters()),
                   "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad)},
        "epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "best_value": state["best_value"],
        "select_metric": state.get("select_name", cfg.select_metric), "history": state["history"],
        "device": str(device), "amp": "bf16" if amp_enabled(device, cfg.amp) else "off",
        "throughput": throughput, **extra,
    }
    if status == "paused":
        atomic_write_text(out / "results.json", results_json({**results, "status": status}) + "\n")
        return results
    best = load_checkpoint(out / "best.pt", map_location=device)
    net.load_state_dict(best["model"])
    frames = {}
    for split in ("valid", "test"):
        if split not in store_obj.splits():
            continue
        ds = StoreDataset(store, split, feature_sets, arch.tasks, cfg.max_len, cfg.truncate, **(ds_text or {}))
        preds = predict_split(net, ds, device, max(64, cfg.batch_size), cfg.num_workers, cfg.amp, cfg.sentiment_loss)
        results[split] = score(preds)
        frames[split] = predictions_frame(preds)
        frames[split].to_csv(out / f"predictions_{split}.csv", index=False)
    report_split = "test" if "test" in frames else "valid"
    plots = write_plots(results, frames.get(report_split), out, report_split)
    results["plots"] = [p.name for p in plots]
    atomic_write_text(out / "results.json", results_json({**results, "status": status}) + "\n")
    write_report({**results, "status": status}, out, plots)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmolre.train", description="Train MMoLRE or a baseline on a feature store.")
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--model", default=None, help="a registered model (`mmolre models`); default: the config's (mmolre)")
    ap.add_argument("--config", help="YAML or JSON TrainConfig")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings, e.g. epochs=5 arch.d_model=64")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    if args.set:
        cfg = cfg.with_overrides(args.set)
    results = train(args.store, args.out, args.model, cfg)
    if results.get("rank", 0) == 0:
        summary = {k: results.get(k) for k in ("model", "status", "best_epoch", "world_size")}
        summary["test"] = results.get("test")
        print(results_json(summary, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
