"""Baselines trained in the same harness as MMoLRE, so every difference in the results is the architecture's.

- single_sentiment / single_emotion: the MMoLRE architecture trained on one task (isolates multi-task learning).
- hard_sharing: one shared encoder (the same encoders plus plain residual conv blocks, no experts, no routers),
  one shared pooling, one head per task (the classic multi-task baseline).
- dense_moe: MMoLRE with full-rank experts (rank = d for every shared and task-specific expert), same count and
  routing (isolates the low-rank saving).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .model import (
    LowRankExpert,
    MMoLRE,
    MMoLREConfig,
    ModalityEncoder,
    TaskAdaptiveFusion,
    conv3_matrix,
    shift3,
    task_head,
)

MODEL_NAMES: tuple[str, ...] = ("mmolre", "dense_moe", "hard_sharing", "single_sentiment", "single_emotion")


class SharedConvBlock(nn.Module):
    """Pre-norm residual block: Conv1d(d -> d, kernel 3), GELU, Conv1d(d -> d, kernel 1)."""

    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.conv1 = nn.Conv1d(d, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, d), (B, T) -> (B, T, d)
        m = mask[..., None].to(x.dtype)
        h = F.gelu(F.linear(shift3(self.norm(x) * m), conv3_matrix(self.conv1), self.conv1.bias))  # Conv1d k=3 as in model.py
        return (x + self.drop(F.linear(h, self.conv2.weight[:, :, 0], self.conv2.bias))) * m


class HardSharing(nn.Module):
    """One encoder and one pooling shared by every task; only the heads are task-specific."""

    def __init__(self, cfg: MMoLREConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tasks = list(cfg.tasks)
        d = cfg.d_model
        self.encoders = nn.ModuleDict({m: ModalityEncoder(dim, cfg) for m, dim in cfg.input_dims.items()})
        self.blocks = nn.ModuleDict({m: nn.ModuleList(SharedConvBlock(d, cfg.dropout) for _ in range(cfg.n_blocks)) for m in cfg.modalities})
        self.fusion = TaskAdaptiveFusion(cfg.modalities, ["shared"], d)
        self.heads = nn.ModuleDict({t.name: task_head(d, t.out_dim, cfg.dropout) for t in cfg.tasks})

    set_input_stats = MMoLRE.set_input_stats

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> dict[str, Any]:
        feats = {}
        for m, enc in self.encoders.items():
            h = enc(x[m], mask[m])
            for block in self.blocks[m]:
                h = block(h, mask[m])
            feats[m] = h.unsqueeze(0)  # (1, B, T, d)
        fused, word_w, mod_w = self.fusion(feats, mask)
        outputs = {t.name: self.heads[t.name](fused[0]).float() for t in self.tasks}
        return {
            "outputs": outputs,
            "aux_loss": fused.new_zeros(()),
            "word_weights": {t.name: word_w["shared"] for t in self.tasks},
            "modality_weights": {t.name: mod_w["shared"] for t in self.tasks},
        }


def model_tasks(name: str, cfg: MMoLREConfig) -> MMoLREConfig:
    """The configuration a named model trains with (single-task models keep only their task)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if name.startswith("single_"):
        task = name.removeprefix("single_")
        kept = tuple(t for t in cfg.tasks if t.name == task)
        if not kept:
            have = ", ".join(t.name for t in cfg.tasks) or "none"
            raise ValueError(f"model {name!r} needs {task} labels; the store has tasks: {have}")
        return replace(cfg, tasks=kept)
    if name == "dense_moe":
        return replace(cfg, expert_ranks=(cfg.d_model,) * len(cfg.expert_ranks), task_rank=cfg.d_model)
    return cfg


def build_model(name: str, cfg: MMoLREConfig) -> nn.Module:
    """A model by name (see MODEL_NAMES), configured for `cfg`'s modalities and tasks."""
    cfg = model_tasks(name, cfg)
    return HardSharing(cfg) if name == "hard_sharing" else MMoLRE(cfg)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameters in total and inside experts (shared + task-specific), so the low-rank saving is a number."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    experts = sum(p.numel() for mod in model.modules() if isinstance(mod, LowRankExpert) for p in mod.parameters() if p.requires_grad)
    return {"total": int(total), "experts": int(experts)}
