"""Pieces the zoo's models share: the config fields every model has, masked pooling, LSTMs over padded sequences,
the per-task heads. Not a model module (its name starts with "_"), so nothing here is registered.

Every zoo model reads any subset of feature sets. Where a paper gives text its own sub-network (TFN's LSTM, MISA's
and Self-MM's BERT), the feature set playing "text" is found by its name (`role`): the store's text sets are named
`text_*` or `*_text` (`text_minilm`, `bclstm_text`), and `--text-encoder finetune` keeps the name of the set it
replaces. Audio and visual sets differ only in their default sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..tasks import TaskSpec
from .contract import InputNorm, ModelConfig, set_input_stats

AUDIO_WORDS = ("audio", "covarep", "egemaps", "opensmile", "wav2vec", "hubert", "data2vec", "mfcc", "compare", "acoustic")


def role(name: str) -> str:
    """text | audio | visual, from a feature set's name (see the module docstring)."""
    n = name.lower()
    if "text" in n:
        return "text"
    return "audio" if any(w in n for w in AUDIO_WORDS) else "visual"


@dataclass
class ZooConfig(ModelConfig):
    """The fields every zoo model's config has; `input_dims` and `tasks` come from the store when training."""

    input_dims: dict[str, int] = field(default_factory=lambda: {"text_minilm": 384})
    tasks: tuple[TaskSpec, ...] = (TaskSpec("sentiment", "regression"),)

    def __post_init__(self) -> None:
        self.tasks = tuple(t if isinstance(t, TaskSpec) else TaskSpec.from_dict(t) for t in self.tasks)
        self.input_dims = {str(k): int(v) for k, v in self.input_dims.items()}
        if not self.input_dims:
            raise ValueError("a model needs at least one feature set (input_dims)")
        if not self.tasks:
            raise ValueError("a model needs at least one task")
        for f in fields(self):  # lists from YAML/JSON become the tuples the dataclass declares
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))



class ZooModel(nn.Module):
    """Base of every zoo model: keeps `config` and `tasks`, one InputNorm per feature set, and the task heads."""

    def __init__(self, cfg: ZooConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tasks = list(cfg.tasks)
        self.norms = nn.ModuleDict({m: InputNorm(d) for m, d in cfg.input_dims.items()})

    def set_input_stats(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        set_input_stats(self.norms, stats)

    def normalise(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> dict[str, Tensor]:
        """Standardised inputs with every absent step zeroed: nothing a model reads depends on padding."""
        return {m: self.norms[m](x[m], mask[m]) for m in self.norms}


def text_set(modalities: list[str]) -> str | None:
    """The first feature set playing the text role, or None."""
    return next((m for m in modalities if role(m) == "text"), None)


def task_heads(d: int, tasks: tuple[TaskSpec, ...] | list[TaskSpec]) -> nn.ModuleDict:
    """One linear output per task (regression value or logits) on a shared representation (hard parameter sharing)."""
    return nn.ModuleDict({t.name: nn.Linear(d, t.out_dim) for t in tasks})


def present(mask: Tensor) -> Tensor:
    """(B, T) -> (B, 1) float: 1 where the segment has at least one usable step of this set."""
    return mask.any(dim=1, keepdim=True).float()


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B, D): the mean over present steps (zeros where none)."""
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def lengths(mask: Tensor) -> Tensor:
    """(B, T) -> (B,) int64 on the CPU: up to the last present step (at least 1); steps masked inside are zeros."""
    T = mask.shape[1]
    idx = torch.arange(1, T + 1, device=mask.device)
    return (mask.long() * idx).amax(dim=1).clamp(min=1).cpu()


def last_step(h: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B, D): each row's last present step (step 0 where none)."""
    i = (lengths(mask) - 1).to(h.device)
    return h[torch.arange(h.shape[0], device=h.device), i]


def run_lstm(rnn: nn.LSTM, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """An LSTM over each row's present steps: outputs (B, T, H * dirs) and the last layer's final state (B, H * dirs)
    (both directions' finals, forward then backward, when bidirectional), as MMSA's packed sequences give."""
    packed = pack_padded_sequence(x, lengths(mask), batch_first=True, enforce_sorted=False)
    out, (h_n, _) = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    dirs = 2 if rnn.bidirectional else 1
    final = torch.cat([h_n[-dirs + k] for k in range(dirs)], dim=-1)  # (B, H * dirs)
    return out, final


def reps_to_outputs(heads: nn.ModuleDict, h: Tensor) -> dict[str, Tensor]:
    return {name: head(h).float() for name, head in heads.items()}


class LSTMSubNet(nn.Module):
    """An LSTM over the present steps, its final state (both directions when bidirectional), dropout, a linear map:
    TFN's TextSubNet, Self-MM's AuViSubNet and MMIM's RNNEncoder are this network."""

    def __init__(self, d_in: int, hidden: int, out: int, dropout: float = 0.0, bidirectional: bool = False) -> None:
        super().__init__()
        self.rnn = nn.LSTM(d_in, hidden, batch_first=True, bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.linear_1 = nn.Linear(hidden * (2 if bidirectional else 1), out)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, out)
        _, final = run_lstm(self.rnn, x, mask)
        return self.linear_1(self.dropout(final))
