"""The optimiser side of a run: seeding, AdamW with its parameter groups, the warm-up + cosine schedule, and the
loss weights read from the training labels."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import StoreDataset


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Python, numpy and torch seeded; `deterministic` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def warmup_cosine(total_steps: int, warmup_ratio: float, min_ratio: float) -> Callable[[int], float]:
    """lr multiplier: linear from 0 to 1 over the warm-up, then cosine down to min_ratio at total_steps."""
    warmup = max(1, int(round(total_steps * warmup_ratio))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(module: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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


def lr_lambdas(optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig) -> list[Any]:
    """One schedule per group: the model's warm-up, or the encoder's own (`encoder_warmup`)."""
    model = warmup_cosine(total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
    encoder = warmup_cosine(total_steps, cfg.encoder_warmup, cfg.min_lr_ratio)
    return [encoder if g.get("encoder") else model for g in optimizer.param_groups]


def label_weights(ds: StoreDataset, cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """pos_weight (multi-label, by rarity) and class weights (multi-class, inverse frequency) from the train labels."""
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
