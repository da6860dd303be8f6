"""Baselines trained in the same harness as MMoLRE, so every difference in the results is the architecture's.

- hard_sharing: one shared encoder (the same encoders plus plain residual conv blocks, no experts, no routers),
  one shared pooling, one head per task (the classic multi-task baseline).
- dense_moe: MMoLRE with full-rank experts (rank = d for every shared and task-specific expert), same count and
  routing (isolates the low-rank saving).
- single-task: any model trained on one task is a task filter (`TrainConfig.tasks`), not a model of its own;
  `single_sentiment` / `single_emotion`, the names older runs and benchmarks used, still resolve (`legacy_name`).
"""

from __future__ import annotations

from dataclasses import replace

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
from .models.contract import ModelOutput, assemble_model, models, register_model


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


@register_model("hard_sharing", config=MMoLREConfig, inputs="any", paper="Caruana 1997, Multitask Learning (Machine "
                "Learning 28): hard parameter sharing", defaults_from="MMoLRE's encoders, fusion and heads (docs/model.md)")
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

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        feats = {}
        for m, enc in self.encoders.items():
            h = enc(x[m], mask[m])
            for block in self.blocks[m]:
                h = block(h, mask[m])
            feats[m] = h.unsqueeze(0)  # (1, B, T, d)
        fused, word_w, mod_w = self.fusion(feats, mask)
        outputs = {t.name: self.heads[t.name](fused[0]).float() for t in self.tasks}
        return ModelOutput(
            outputs,
            fused.new_zeros(()),
            {t.name: word_w["shared"] for t in self.tasks},
            {t.name: mod_w["shared"] for t in self.tasks},
        )


@register_model("dense_moe", config=MMoLREConfig, inputs="any", paper="Shazeer et al. 2017, Outrageously Large Neural "
                "Networks: the Sparsely-Gated Mixture-of-Experts Layer (ICLR): full-rank experts",
                defaults_from="MMoLRE's, every expert at rank d_model")
class DenseMoE(MMoLRE):
    """MMoLRE with every expert full-rank (rank = d): same count, routing and task experts."""

    def __init__(self, cfg: MMoLREConfig) -> None:
        super().__init__(replace(cfg, expert_ranks=(cfg.d_model,) * len(cfg.expert_ranks), task_rank=cfg.d_model))


LEGACY_SINGLE = {"single_sentiment": "sentiment", "single_emotion": "emotion"}  # model names of runs before the registry


def legacy_name(name: str) -> tuple[str, str | None]:
    """(registered model, task filter) of a model name: `single_emotion` is mmolre on emotion alone."""
    return ("mmolre", LEGACY_SINGLE[name]) if name in LEGACY_SINGLE else (name, None)


def model_tasks(name: str, cfg: MMoLREConfig) -> MMoLREConfig:
    """`cfg` with only the task a legacy single-task name keeps (unchanged for a registered name)."""
    _, task = legacy_name(name)
    if task is None:
        return cfg
    kept = tuple(t for t in cfg.tasks if t.name == task)
    if not kept:
        have = ", ".join(t.name for t in cfg.tasks) or "none"
        raise ValueError(f"model {name!r} needs {task} labels; the store has tasks: {have}")
    return replace(cfg, tasks=kept)


def build_model(name: str, cfg: MMoLREConfig) -> nn.Module:
    """`assemble_model`, also for the legacy single-task names (benchmarks and older runs)."""
    return assemble_model(legacy_name(name)[0], model_tasks(name, cfg))


def model_names() -> tuple[str, ...]:
    """Every registered model, then the legacy single-task names."""
    return (*models(), *LEGACY_SINGLE)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameters in total and inside experts (shared + task-specific), so the low-rank saving is a number."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    experts = sum(p.numel() for mod in model.modules() if isinstance(mod, LowRankExpert) for p in mod.parameters() if p.requires_grad)
    return {"total": int(total), "experts": int(experts)}
