"""MulT: Multimodal Transformer for unaligned multimodal language sequences (Tsai et al., ACL 2019).

    per feature set m: x[m] (B, T_m, D_m), mask[m] (B, T_m)
      -> InputNorm, Dropout (text only: text_dropout)
      -> temporal Conv1d D_m -> d (kernel k_m, same length, no bias)                      (B, T_m, d)
      -> per target set m, per source set n != m: crossmodal transformer n -> m
             (nlevels pre-LN layers: queries from m, keys/values from n)                  (B, T_m, d)
      -> concatenate the sources, self-attention transformer over m ("memory")            (B, T_m, (M-1) d)
      -> m's last present step                                                            (B, (M-1) d)
      -> concatenate the targets, proj1 -> ReLU -> Dropout -> proj2, + residual            (B, M (M-1) d)
      -> heads                                                                             one Linear per task

With one feature set there is no other modality to attend to; the set is its own source (plain self-attention), so
text-only MulT is a transformer over the words. Sequences of different lengths never need aligning: attention joins
them. Differences from MMSA's code: no causal ("future") attention mask, 'same' padding in the convolutions (so a
one-step utterance-level set keeps its step), and the last *present* step instead of the last padded one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model import sinusoidal_positions
from ._parts import ZooConfig, ZooModel, last_step, present, reps_to_outputs, role, task_heads
from .contract import ModelOutput, register_model


@dataclass
class MulTConfig(ZooConfig):
    """MMSA 2.2.1 config/config_regression.json, key `mult`, datasetParams `mosi`: dst_feature_dim_nheads
    [50, 10], nlevels 4 (memory transformers max(nlevels, 3)), conv1d_kernel_size_l/a/v 5, attn_dropout 0.3 (text
    targets), attn_dropout_a 0.2, attn_dropout_v 0.0, relu_dropout 0.0, embed_dropout 0.2, res_dropout 0.0,
    text_dropout 0.5, output_dropout 0.5; trained there with batch_size 16, learning_rate 2e-3, grad_clip 0.6,
    weight_decay 5e-3."""

    d_model: int = 50
    n_heads: int = 10
    nlevels: int = 4
    kernel_size: int = 5
    attn_dropout_text: float = 0.3
    attn_dropout_audio: float = 0.2
    attn_dropout_visual: float = 0.0
    relu_dropout: float = 0.0
    embed_dropout: float = 0.2
    res_dropout: float = 0.0
    text_dropout: float = 0.5
    output_dropout: float = 0.5


class CrossmodalLayer(nn.Module):
    """One pre-LN transformer layer whose queries come from the target sequence and keys/values from the source
    (the same layer norm on both, as in MulT); source = target makes it a self-attention layer."""

    def __init__(self, d: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=attn_dropout, batch_first=True)
        self.norm_attn, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout

    def forward(self, x: Tensor, y: Tensor, y_mask: Tensor) -> Tensor:  # (B, T, d), (B, S, d), (B, S) -> (B, T, d)
        q, kv = self.norm_attn(x), self.norm_attn(y)
        has = y_mask.any(dim=1)  # (B,): a segment without the source gets nothing from it
        a, _ = self.attn(q, kv, kv, key_padding_mask=~y_mask & has[:, None], need_weights=False)
        x = x + F.dropout(a * has[:, None, None].to(a.dtype), self.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(self.norm_ff(x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.res_dropout, self.training)


class CrossmodalTransformer(nn.Module):
    """Scaled embeddings plus sinusoidal positions, `layers` CrossmodalLayers, a final LayerNorm."""

    def __init__(self, d: int, heads: int, layers: int, attn_dropout: float, cfg: MulTConfig) -> None:
        super().__init__()
        self.scale, self.embed_dropout = math.sqrt(d), cfg.embed_dropout
        self.layers = nn.ModuleList(CrossmodalLayer(d, heads, attn_dropout, cfg.relu_dropout, cfg.res_dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def embed(self, x: Tensor) -> Tensor:
        x = self.scale * x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        return F.dropout(x, self.embed_dropout, self.training)

    def forward(self, x: Tensor, x_mask: Tensor, y: Tensor | None = None, y_mask: Tensor | None = None) -> Tensor:
        # x (B, T, d), x_mask (B, T); source y (B, S, d), y_mask (B, S), or None for self-attention -> (B, T, d)
        self_attention = y is None
        x = self.embed(x)
        y, y_mask = (None, x_mask) if self_attention else (self.embed(y), y_mask)
        for layer in self.layers:
            x = layer(x, x if self_attention else y, y_mask)
        return self.norm(x)


@register_model("mult", config=MulTConfig, paper="Tsai et al. 2019, Multimodal Transformer for Unaligned Multimodal Language Sequences (ACL)",
                defaults_from="MMSA 2.2.1 config/config_regression.json: mult, datasetParams.mosi")
class MulT(ZooModel):
    """Multimodal Transformer: every set attends to every other through crossmodal transformers."""

    def __init__(self, cfg: MulTConfig) -> None:
        super().__init__(cfg)
        d, mods = cfg.d_model, cfg.modalities
        self.sources = {m: [n for n in mods if n != m] or [m] for m in mods}
        drop = {"text": cfg.attn_dropout_text, "audio": cfg.attn_dropout_audio, "visual": cfg.attn_dropout_visual}
        self.proj = nn.ModuleDict({m: nn.Conv1d(dim, d, cfg.kernel_size, padding=cfg.kernel_size // 2, bias=False)
                                   for m, dim in cfg.input_dims.items()})
        self.cross = nn.ModuleDict({f"{n}->{m}": CrossmodalTransformer(d, cfg.n_heads, cfg.nlevels, drop[role(m)], cfg)
                                    for m in mods for n in self.sources[m]})
        self.mem = nn.ModuleDict({m: CrossmodalTransformer(d * len(self.sources[m]), cfg.n_heads, max(cfg.nlevels, 3), drop[role(m)], cfg)
                                  for m in mods})
        combined = sum(d * len(self.sources[m]) for m in mods)
        self.proj1, self.proj2 = nn.Linear(combined, combined), nn.Linear(combined, combined)
        self.heads = task_heads(combined, cfg.tasks)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        x = self.normalise(x, mask)
        h = {}
        for m, conv in self.proj.items():
            xm = F.dropout(x[m], self.config.text_dropout, self.training) if role(m) == "text" else x[m]
            h[m] = conv(xm.transpose(1, 2)).transpose(1, 2)  # (B, T_m, d)
        last = []
        for m in self.proj:
            c = torch.cat([self.cross[f"{n}->{m}"](h[m], mask[m], h[n], mask[n]) for n in self.sources[m]], dim=-1)
            c = self.mem[m](c, mask[m])  # (B, T_m, (M-1) d)
            last.append(last_step(c, mask[m]) * present(mask[m]))
        hs = torch.cat(last, dim=-1)  # (B, combined)
        hs = hs + self.proj2(F.dropout(F.relu(self.proj1(hs)), self.config.output_dropout, self.training))
        return ModelOutput(outputs=reps_to_outputs(self.heads, hs), aux_loss=hs.new_zeros(()))
