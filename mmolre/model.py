"""MMoLRE: Multi-task Mixture of Low-Rank Experts for sentiment and emotion (arXiv 2505.14143), one file.

Data flows top to bottom through the classes in the order they are defined:

    word-aligned features per modality (B, T, D_m) + masks (B, T)
      -> ModalityEncoder      input normalisation, projection to d, temporal Transformer (or conv)  (B, T, d)
      -> copy per task        (K, B, T, d), K = number of tasks
      -> UniTSEBlock x n      per modality: N shared LowRankExperts + one task-specific LowRankExpert,
                              weighted per word by each task's TaskRouter                           (K, B, T, d)
      -> TaskAdaptiveFusion   per task: attention pooling over words, attention over modalities     (K, B, d)
      -> heads                one per task: sentiment (regression or classes), emotion (labels or classes)

What the paper does not publish (N, ranks, router and fusion details) is a choice made here and documented
in docs/model.md. Experts have no activation inside, so all of a block's shared experts run as two matrix products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.contract import ModelConfig, ModelOutput, register_model
from .tasks import TaskSpec


def linear_ranks(n: int, low: int = 8, high: int = 64) -> tuple[int, ...]:
    """n different ranks spread evenly from low to high (MLoRE spreads 15 experts over 16..128)."""
    if n == 1:
        return (low,)
    return tuple(int(round(r)) for r in np.linspace(low, high, n))


SMALL_TRAIN = 5000  # training segments under which `MMoLREConfig.sized_for` shrinks the default model


@dataclass
class MMoLREConfig(ModelConfig):
    """Architecture. `input_dims` and `tasks` come from the store when training; the rest are hyperparameters."""

    refusal_name = "model"  # 'unknown model setting(s): ...', as before the zoo had configs of its own

    input_dims: dict[str, int] = field(default_factory=lambda: {"text": 384, "audio": 74})
    tasks: tuple[TaskSpec, ...] = (TaskSpec("sentiment", "regression"),)
    d_model: int = 128
    encoder: str = "transformer"  # transformer | conv | none
    encoder_layers: int = 1
    n_heads: int = 4
    n_blocks: int = 2
    expert_ranks: tuple[int, ...] = (8, 16, 24, 32, 40, 48, 56, 64)  # one shared expert per rank
    task_rank: int = 32
    top_k: int | None = None  # keep the k largest router weights per word (None: dense softmax)
    noisy_gating: bool = False  # Gaussian noise on router logits while training (Shazeer et al.)
    dropout: float = 0.1
    balance_weight: float = 3e-4  # weight of the routers' load-balancing loss in aux_loss (MLoRE's value)

    def __post_init__(self) -> None:
        self.expert_ranks = tuple(int(r) for r in self.expert_ranks)
        self.tasks = tuple(t if isinstance(t, TaskSpec) else TaskSpec.from_dict(t) for t in self.tasks)
        self.input_dims = {str(k): int(v) for k, v in self.input_dims.items()}
        if self.encoder not in ("transformer", "conv", "none"):
            raise ValueError(f"encoder must be transformer, conv or none, not {self.encoder!r}")
        if not self.input_dims:
            raise ValueError("a model needs at least one modality (input_dims)")
        if self.top_k is not None and not 1 <= self.top_k <= len(self.expert_ranks):
            raise ValueError(f"top_k={self.top_k} must be between 1 and the number of experts ({len(self.expert_ranks)})")


    def sized_for(self, n_train: int) -> MMoLREConfig:
        """These defaults for a training set of `n_train` segments: under SMALL_TRAIN, a quarter of the width and
        depth with heavy dropout (CMU-MOSI's 1,284 training segments overfit d = 128 with two blocks in a few epochs;
        the sizes bench/mosi_utterance.py runs), else unchanged."""
        if n_train >= SMALL_TRAIN:
            return self
        return replace(self, d_model=64, n_blocks=1, expert_ranks=(4, 8, 16, 32), task_rank=16, dropout=0.5)

    @classmethod
    def paper(cls, input_dims: dict[str, int], tasks: tuple[TaskSpec, ...]) -> MMoLREConfig:
        """The paper's scale: d = 768, two UniTSE blocks; ranks and N are our choice (not published)."""
        return cls(input_dims=input_dims, tasks=tasks, d_model=768, n_heads=8, expert_ranks=linear_ranks(8, 16, 128), task_rank=64)


# ---------------------------------------------------------------------------------------------------------------
# helpers


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the True entries of mask; all-False rows give all zeros instead of NaN."""
    scores = scores.float().masked_fill(~mask, float("-inf"))
    any_valid = mask.any(dim=dim, keepdim=True)
    return torch.softmax(torch.where(any_valid, scores, torch.zeros_like(scores)), dim=dim) * mask


def sinusoidal_positions(length: int, d: int, device: torch.device) -> Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    div = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(length, d, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe  # (T, d)


# ---------------------------------------------------------------------------------------------------------------
# unimodal encoder


class ModalityEncoder(nn.Module):
    """Standardise with training-set statistics, project D_m -> d, add positions, encode the word sequence."""

    def __init__(self, in_dim: int, cfg: MMoLREConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.proj = nn.Linear(in_dim, d)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.kind = cfg.encoder
        if cfg.encoder == "transformer":
            layer = nn.TransformerEncoderLayer(d, cfg.n_heads, 2 * d, cfg.dropout, activation="gelu", batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, enable_nested_tensor=False)
        elif cfg.encoder == "conv":
            self.encoder = nn.ModuleList(nn.Conv1d(d, d, 3, padding=1) for _ in range(cfg.encoder_layers))  # run via shift3

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D_m), (B, T) -> (B, T, d)
        x = ((x - self.mean) / self.std) * mask[..., None]
        h = self.drop(self.norm(self.proj(x)))
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device).to(h.dtype)
        if self.kind == "transformer":
            # a segment with no usable word in this modality attends everywhere (its output is masked anyway)
            pad = ~mask & mask.any(dim=1, keepdim=True)
            h = self.encoder(h, src_key_padding_mask=pad)
        elif self.kind == "conv":
            for conv in self.encoder:
                h = h + F.gelu(F.linear(shift3(h * mask[..., None]), conv3_matrix(conv), conv.bias))
        return h * mask[..., None]


# ---------------------------------------------------------------------------------------------------------------
# UniTSE: low-rank experts, routers, blocks


def shift3(x: Tensor) -> Tensor:
    """(B, T, C) -> (B, T, 3C): each step next to its left and right neighbours (zeros beyond the ends)."""
    xp = F.pad(x, (0, 0, 1, 1))
    return torch.cat([xp[:, :-2], xp[:, 1:-1], xp[:, 2:]], dim=-1)


def conv3_matrix(conv: nn.Conv1d) -> Tensor:
    """A kernel-3 Conv1d's weight (C_out, C_in, 3) as the (C_out, 3 C_in) matrix that multiplies shift3's output."""
    return conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1)


class LowRankExpert(nn.Module):
    """Conv1d(d -> r, kernel 3) then Conv1d(r -> d, kernel 1), nothing in between: 4dr + r + d parameters.

    Run as matrix products over shift3's neighbours, which is the same arithmetic as the convolutions (padding 1)
    and several times faster than conv1d's CPU backward at these sizes."""

    def __init__(self, d: int, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.down = nn.Conv1d(d, rank, kernel_size=3, padding=1)
        self.up = nn.Conv1d(rank, d, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d) -> (B, T, d)
        h = F.linear(shift3(x), conv3_matrix(self.down), self.down.bias)  # (B, T, r)
        return F.linear(h, self.up.weight[:, :, 0], self.up.bias)


def stack_experts(experts: nn.ModuleList) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """All experts' weights side by side: down (R, 3d), down bias (R,), up (d, R), up bias (N, d); R = sum of ranks."""
    w_down = torch.cat([conv3_matrix(e.down) for e in experts])
    b_down = torch.cat([e.down.bias for e in experts])
    w_up = torch.cat([e.up.weight[:, :, 0] for e in experts], dim=1)
    b_up = torch.stack([e.up.bias for e in experts])
    return w_down, b_down, w_up, b_up


def mix_experts(stacked: tuple[Tensor, Tensor, Tensor, Tensor], x: Tensor, gates: Tensor, channel_expert: Tensor) -> Tensor:
    """sum_n gates[..., n] * expert_n(x) for all experts at once: x (B, T, d), gates (B, T, N) -> (B, T, d).

    An expert is linear and its second conv has kernel 1, so scaling expert n's hidden channels by its per-word
    gate before the up-projection equals scaling its output: one down and one up matrix product in total.
    `channel_expert` (R,) says which expert each hidden channel belongs to."""
    w_down, b_down, w_up, b_up = stacked
    h = F.linear(shift3(x), w_down, b_down)  # (B, T, R)
    y = F.linear(h * gates[..., channel_expert].to(h.dtype), w_up)  # (B, T, d)
    return y + (gates.to(b_up.dtype) @ b_up).to(y.dtype)


class TaskRouter(nn.Module):
    """Per-word softmax weights over the shared experts for one task; optional top-k and noisy gating.

    Also returns the load-balancing loss N * sum_n f_n * P_n (Switch Transformer), where P_n is the mean router
    probability of expert n and f_n the fraction of words routed to it (its top-k share; top-1 when dense)."""

    def __init__(self, d: int, n_experts: int, top_k: int | None, noisy: bool) -> None:
        super().__init__()
        self.n, self.top_k = n_experts, top_k
        self.gate = nn.Linear(d, n_experts)
        nn.init.zeros_(self.gate.weight)  # start uniform: every expert gets gradient
        nn.init.zeros_(self.gate.bias)
        self.noise = nn.Linear(d, n_experts) if noisy else None
        if self.noise is not None:
            nn.init.zeros_(self.noise.weight)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:  # (B, T, d), (B, T) -> (B, T, N), ()
        logits = self.gate(x).float()
        if self.noise is not None and self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise(x).float())
        probs = torch.softmax(logits, dim=-1)
        k = self.top_k if self.top_k and self.top_k < self.n else None
        if k:
            kth = logits.topk(k, dim=-1).values[..., -1:]
            gates = torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)
            chosen = (gates > 0).float() / k
        else:
            gates = probs
            chosen = F.one_hot(probs.argmax(-1), self.n).float()
        w = mask.float()[..., None]  # (B, T, 1)
        denom = w.sum().clamp(min=1.0)
        f = (chosen * w).sum((0, 1)) / denom  # (N,)
        p = (probs * w).sum((0, 1)) / denom  # (N,)
        return gates, self.n * (f * p).sum()


class UniTSEBlock(nn.Module):
    """One UniTSE block of one modality. Each task's copy of the features is normalised, weighted per word over the
    N shared low-rank experts by that task's router, added to that task's own low-rank expert (scaled by a learned
    scalar gate, as MLoRE does), passed through GELU and added back (pre-norm residual)."""

    def __init__(self, cfg: MMoLREConfig) -> None:
        super().__init__()
        d, names = cfg.d_model, [t.name for t in cfg.tasks]
        self.tasks = names
        self.shared = nn.ModuleList(LowRankExpert(d, r) for r in cfg.expert_ranks)
        ranks = torch.tensor(cfg.expert_ranks)
        self.register_buffer("channel_expert", torch.repeat_interleave(torch.arange(len(ranks)), ranks), persistent=False)
        self.task_experts = nn.ModuleDict({t: LowRankExpert(d, cfg.task_rank) for t in names})
        self.task_gates = nn.ParameterDict({t: nn.Parameter(torch.ones(())) for t in names})
        self.routers = nn.ModuleDict({t: TaskRouter(d, len(cfg.expert_ranks), cfg.top_k, cfg.noisy_gating) for t in names})
        self.norms = nn.ModuleDict({t: nn.LayerNorm(d) for t in names})
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, xs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # xs (K, B, T, d), mask (B, T) -> (K, B, T, d), balance loss ()
        m = mask[..., None].to(xs.dtype)
        outs, balances = [], []
        stacked = stack_experts(self.shared)  # shared by every task copy
        for k, t in enumerate(self.tasks):
            z = self.norms[t](xs[k]) * m  # (B, T, d); padded words stay zero so no neighbour leaks in
            gates, balance = self.routers[t](z, mask)  # (B, T, N), ()
            y = mix_experts(stacked, z, gates, self.channel_expert) + self.task_gates[t] * self.task_experts[t](z)
            outs.append((xs[k] + self.drop(F.gelu(y))) * m)
            balances.append(balance)
        return torch.stack(outs), torch.stack(balances).mean()


# ---------------------------------------------------------------------------------------------------------------
# fusion and heads


class TaskAdaptiveFusion(nn.Module):
    """Per task: attention pooling over the words of each modality (masked), then attention over the modalities
    present in the segment. Returns the fused vector and both sets of weights (for per-word explanations)."""

    def __init__(self, modalities: list[str], tasks: list[str], d: int) -> None:
        super().__init__()
        self.modalities, self.tasks = modalities, tasks
        self.word_score = nn.ModuleDict({t: nn.ModuleDict({m: nn.Linear(d, 1) for m in modalities}) for t in tasks})
        self.modality_score = nn.ModuleDict({t: nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1)) for t in tasks})

    def forward(self, feats: dict[str, Tensor], masks: dict[str, Tensor]) -> tuple[Tensor, dict[str, dict[str, Tensor]], dict[str, Tensor]]:
        # feats[m] (K, B, T_m, d), masks[m] (B, T_m) -> fused (K, B, d), word weights [task][m] (B, T_m), modality weights [task] (B, M)
        fused, word_w, mod_w = [], {}, {}
        present = torch.stack([masks[m].any(dim=1) for m in self.modalities], dim=1)  # (B, M)
        for k, t in enumerate(self.tasks):
            pooled, word_w[t] = [], {}
            for m in self.modalities:
                a = masked_softmax(self.word_score[t][m](feats[m][k]).squeeze(-1), masks[m])  # (B, T_m)
                word_w[t][m] = a
                pooled.append(torch.einsum("bt,btd->bd", a.to(feats[m].dtype), feats[m][k]))
            P = torch.stack(pooled, dim=1)  # (B, M, d)
            b = masked_softmax(self.modality_score[t](P).squeeze(-1), present)  # (B, M)
            mod_w[t] = b
            fused.append(torch.einsum("bm,bmd->bd", b.to(P.dtype), P))
        return torch.stack(fused), word_w, mod_w


def task_head(d: int, out_dim: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, out_dim))


# ---------------------------------------------------------------------------------------------------------------
# the model


@register_model("mmolre", config=MMoLREConfig, inputs="any", paper="Multi-task Mixture of Low-Rank Experts for "
                "sentiment and emotion (arXiv 2505.14143)", defaults_from="docs/model.md (N, ranks and fusion: our choice)")
class MMoLRE(nn.Module):
    """Multi-task mixture of low-rank experts: per-task routers over shared low-rank experts, task-adaptive fusion.

    forward(x, mask) with x[m] (B, T, D_m) and mask[m] (B, T) per modality returns a ModelOutput: outputs[task]
    (B, out_dim) raw scores (regression value / logits), aux_loss (balance_weight x the load-balancing loss averaged
    over blocks; the unweighted loss is extras["balance"]), word_weights[task][m] (B, T), modality_weights[task] (B, M)."""

    def __init__(self, cfg: MMoLREConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tasks = list(cfg.tasks)
        names, mods, d = [t.name for t in cfg.tasks], cfg.modalities, cfg.d_model
        self.encoders = nn.ModuleDict({m: ModalityEncoder(dim, cfg) for m, dim in cfg.input_dims.items()})
        self.blocks = nn.ModuleDict({m: nn.ModuleList(UniTSEBlock(cfg) for _ in range(cfg.n_blocks)) for m in mods})
        self.fusion = TaskAdaptiveFusion(mods, names, d)
        self.heads = nn.ModuleDict({t.name: task_head(d, t.out_dim, cfg.dropout) for t in cfg.tasks})

    def set_input_stats(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Training-set mean and std per modality, kept in the model so inference standardises the same way."""
        for m, (mean, std) in stats.items():
            if m in self.encoders:
                self.encoders[m].mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
                self.encoders[m].std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def encode(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.encoders[m](x[m], mask[m]) for m in self.encoders}  # (B, T_m, d)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        h = self.encode(x, mask)
        K = len(self.tasks)
        feats, aux = {}, []
        for m, hm in h.items():
            xs = hm.unsqueeze(0).expand(K, *hm.shape)  # (K, B, T, d): one copy per task
            for block in self.blocks[m]:
                xs, balance = block(xs, mask[m])
                aux.append(balance)
            feats[m] = xs
        fused, word_w, mod_w = self.fusion(feats, mask)  # (K, B, d)
        outputs = {t.name: self.heads[t.name](fused[k]).float() for k, t in enumerate(self.tasks)}
        balance = torch.stack(aux).mean() if aux else fused.new_zeros(())
        return ModelOutput(outputs, self.config.balance_weight * balance, word_w, mod_w, {"balance": balance})
