"""TFN: Tensor Fusion Network (Zadeh et al., EMNLP 2017), for any subset of feature sets.

    per feature set m: x[m] (B, T, D_m), mask[m] (B, T)
      -> InputNorm                          training-set standardisation, absent steps zeroed
      -> text:  TextSubNet  LSTM over the words, final state -> Dropout -> Linear      z_t (B, text_out)
         other: SubNet      masked mean over steps -> Dropout -> 3 x (Linear, ReLU)    z_m (B, hidden_m)
      -> tensor fusion      z = (1, z_1) (x) (1, z_2) (x) ... outer product, flattened  (B, prod_m (h_m + 1))
      -> post-fusion        Dropout -> Linear, ReLU -> Linear, ReLU                      (B, post_fusion_dim)
      -> heads              one Linear per task

The appended 1 keeps every unimodal and bimodal term inside the product (the paper's "tensor fusion"). An absent set
(a segment without audio) has z_m = 0, leaving only the 1. Differences from MMSA's code: no BatchNorm in SubNet
(InputNorm standardises with training-set statistics instead, so a prediction does not depend on its batch), and a
linear head instead of MMSA's sigmoid scaled to [-3, 3] (evaluation clips to [-3, 3]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._parts import LSTMSubNet, ZooConfig, ZooModel, masked_mean, present, reps_to_outputs, role, task_heads
from .contract import ModelOutput, register_model


@dataclass
class TFNConfig(ZooConfig):
    """MMSA 2.2.1 config/config_regression.json, key `tfn`, datasetParams `mosi`: hidden_dims [128, 32, 128]
    (text, audio, video), text_out 32, post_fusion_dim 64, dropouts [0.3, 0.3, 0.3, 0.5] (audio, video, text,
    post-fusion); trained there with batch_size 32, learning_rate 1e-3, early_stop 8."""

    text_hidden: int = 128
    text_out: int = 32
    audio_hidden: int = 32
    visual_hidden: int = 128
    post_fusion_dim: int = 64
    dropout: float = 0.3  # audio, video and text sub-networks
    post_fusion_dropout: float = 0.5
    max_fusion_dim: int = 2_000_000  # refuse a product larger than this (many sets at large sizes)


class SubNet(nn.Module):
    """Audio/visual sub-network: the set's mean over its present steps, then three ReLU layers."""

    def __init__(self, d_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.linear_1, self.linear_2, self.linear_3 = nn.Linear(d_in, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, hidden)
        h = self.drop(masked_mean(x, mask))
        return F.relu(self.linear_3(F.relu(self.linear_2(F.relu(self.linear_1(h))))))


def TextSubNet(d_in: int, hidden: int, out: int, dropout: float) -> LSTMSubNet:  # noqa: N802 - the paper's name
    """Text sub-network: an LSTM over the words, its final state, dropout, a linear map to text_out."""
    return LSTMSubNet(d_in, hidden, out, dropout)


def subnet(name: str, d_in: int, cfg: TFNConfig | Any) -> tuple[nn.Module, int]:
    """The sub-network of one feature set and its output width (TFN's and LMF's, by the set's role)."""
    r = role(name)
    if r == "text":
        return TextSubNet(d_in, cfg.text_hidden, cfg.text_out, cfg.dropout), cfg.text_out
    h = cfg.audio_hidden if r == "audio" else cfg.visual_hidden
    return SubNet(d_in, h, cfg.dropout), h


def with_one(z: Tensor) -> Tensor:
    """(B, h) -> (B, h + 1): the constant 1 that keeps every lower-order term inside a product of modalities."""
    return torch.cat([torch.ones_like(z[:, :1]), z], dim=1)


@register_model("tfn", config=TFNConfig, paper="Zadeh et al. 2017, Tensor Fusion Network for Multimodal Sentiment Analysis (EMNLP)",
                defaults_from="MMSA 2.2.1 config/config_regression.json: tfn, datasetParams.mosi")
class TFN(ZooModel):
    """Tensor Fusion Network: the outer product of every set's sub-network output (each with a 1 appended)."""

    def __init__(self, cfg: TFNConfig) -> None:
        super().__init__(cfg)
        self.subnets = nn.ModuleDict()
        sizes = []
        for m, d in cfg.input_dims.items():
            self.subnets[m], h = subnet(m, d, cfg)
            sizes.append(h + 1)
        fusion_dim = math.prod(sizes)
        if fusion_dim > cfg.max_fusion_dim:
            raise ValueError(f"TFN: the fused tensor of {', '.join(cfg.input_dims)} has {fusion_dim:,} entries "
                             f"(sizes {sizes}); lower the hidden sizes or raise max_fusion_dim")
        self.post_fusion_dropout = nn.Dropout(cfg.post_fusion_dropout)
        self.post_fusion_layer_1 = nn.Linear(fusion_dim, cfg.post_fusion_dim)
        self.post_fusion_layer_2 = nn.Linear(cfg.post_fusion_dim, cfg.post_fusion_dim)
        self.heads = task_heads(cfg.post_fusion_dim, cfg.tasks)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        x = self.normalise(x, mask)
        fusion = None
        for m, net in self.subnets.items():
            z1 = with_one(net(x[m], mask[m]) * present(mask[m]))  # (B, h_m + 1)
            fusion = z1 if fusion is None else (fusion[:, :, None] * z1[:, None, :]).flatten(1)  # (B, prod)
        h = self.post_fusion_dropout(fusion)
        h = F.relu(self.post_fusion_layer_2(F.relu(self.post_fusion_layer_1(h))))  # (B, post_fusion_dim)
        return ModelOutput(outputs=reps_to_outputs(self.heads, h), aux_loss=h.new_zeros(()))
