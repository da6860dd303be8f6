"""MISA: Modality-Invariant and -Specific Representations (Hazarika et al., ACM MM 2020), any subset of sets.

    per feature set m: x[m] (B, T_m, D_m), mask[m] (B, T_m)
      -> InputNorm
      -> utterance vector u_m:  text: mean over the words (MISA's BERT path)                         (B, D_t)
                                other: sLSTM, two bidirectional LSTMs with a LayerNorm between,
                                       both final states concatenated                              (B, 4 D_m)
      -> project_m: Linear -> ReLU -> LayerNorm                                                  o_m (B, h)
      -> private_m(o_m) = sigmoid(Linear_m o_m)  (specific);  shared(o_m) = sigmoid(Linear o_m)  (invariant, one
         encoder for every set)                                                                  (B, h) each
      -> fusion: the 2M vectors as a sequence, one TransformerEncoder layer (2 heads),
         concatenated, Linear 2Mh -> Mh -> Dropout -> ReLU                                        (B, M h)
      -> heads                                                                                   one Linear per task

aux_loss (the paper's L = L_task + alpha L_sim + beta L_diff + gamma L_recon, weights from the config):
  L_sim   CMD (central moment discrepancy, 5 moments) between every pair of sets' shared vectors;
  L_diff  soft orthogonality ||P_m^T S_m||_F^2 (and between private pairs), on centred, L2-normalised rows;
  L_recon MSE between o_m and recon_m(private_m + shared_m).
With one feature set L_sim has no pair and is 0. Differences from MMSA's code: the text vector is the mean of the
word vectors (the fine-tuned encoder's pooled words with `--text-encoder finetune`), not of BERT's sub-word states.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._parts import ZooConfig, ZooModel, masked_mean, present, reps_to_outputs, role, run_lstm, task_heads
from .contract import ModelOutput, register_model


@dataclass
class MISAConfig(ZooConfig):
    """MMSA 2.2.1 config/config_regression.json, key `misa`, datasetParams `mosi`: hidden_size 128, dropout 0.2,
    diff_weight 0.1, sim_weight 0.3 (use_cmd_sim: CMD), recon_weight 1.0, rnncell lstm; trained there with
    batch_size 16, learning_rate 1e-4, grad_clip 0.8, BERT fine-tuned (use_finetune)."""

    hidden_size: int = 128
    dropout: float = 0.2
    diff_weight: float = 0.1
    sim_weight: float = 0.3
    recon_weight: float = 1.0
    cmd_moments: int = 5
    fusion_heads: int = 2


class SLSTM(nn.Module):
    """MISA's acoustic/visual extractor: BiLSTM -> LayerNorm -> BiLSTM; both layers' final states (B, 4 D)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.rnn1 = nn.LSTM(d, d, batch_first=True, bidirectional=True)
        self.rnn2 = nn.LSTM(2 * d, d, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(2 * d)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, 4 D)
        h1, final1 = run_lstm(self.rnn1, x, mask)
        _, final2 = run_lstm(self.rnn2, self.norm(h1), mask)
        return torch.cat([final1, final2], dim=-1)


def diff_loss(a: Tensor, b: Tensor) -> Tensor:
    """Soft orthogonality: mean of (A^T B)^2 over centred, L2-normalised rows (MISA's DiffLoss)."""
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    a = a / (a.norm(dim=1, keepdim=True) + 1e-6)
    b = b / (b.norm(dim=1, keepdim=True) + 1e-6)
    return (a.t() @ b).pow(2).mean()


def cmd(a: Tensor, b: Tensor, moments: int) -> Tensor:
    """Central moment discrepancy (Zellinger et al. 2017): distance of means plus of central moments 2..K."""
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = a - ma, b - mb
    total = (ma - mb).norm()
    for k in range(2, moments + 1):
        total = total + (sa.pow(k).mean(0) - sb.pow(k).mean(0)).norm()
    return total


@register_model("misa", config=MISAConfig, paper="Hazarika et al. 2020, MISA: Modality-Invariant and -Specific Representations for Multimodal Sentiment Analysis (ACM MM)",
                defaults_from="MMSA 2.2.1 config/config_regression.json: misa, datasetParams.mosi")
class MISA(ZooModel):
    """MISA: each set split into a private (specific) and a shared (invariant) subspace, fused by a transformer."""

    def __init__(self, cfg: MISAConfig) -> None:
        super().__init__(cfg)
        h = cfg.hidden_size
        self.extract = nn.ModuleDict({m: SLSTM(d) for m, d in cfg.input_dims.items() if role(m) != "text"})
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(d if role(m) == "text" else 4 * d, h), nn.ReLU(), nn.LayerNorm(h))
                                      for m, d in cfg.input_dims.items()})
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(h, h), nn.Sigmoid()) for m in cfg.modalities})
        self.shared = nn.Sequential(nn.Linear(h, h), nn.Sigmoid())
        self.recon = nn.ModuleDict({m: nn.Linear(h, h) for m in cfg.modalities})
        layer = nn.TransformerEncoderLayer(h, cfg.fusion_heads, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        M = len(cfg.modalities)
        self.fusion = nn.Sequential(nn.Linear(2 * M * h, M * h), nn.Dropout(cfg.dropout), nn.ReLU())
        self.heads = task_heads(M * h, cfg.tasks)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        cfg = self.config
        x = self.normalise(x, mask)
        o, p, s = {}, {}, {}
        for m in self.project:
            u = self.extract[m](x[m], mask[m]) if m in self.extract else masked_mean(x[m], mask[m])
            o[m] = self.project[m](u * present(mask[m]))  # (B, h)
            p[m], s[m] = self.private[m](o[m]), self.shared(o[m])
        seq = torch.stack([p[m] for m in p] + [s[m] for m in s], dim=1)  # (B, 2M, h)
        fused = self.fusion(self.transformer(seq).flatten(1))  # (B, M h)
        mods = list(o)
        l_diff = sum(diff_loss(p[m], s[m]) for m in mods) + sum(diff_loss(p[a], p[b]) for a, b in itertools.combinations(mods, 2))
        l_sim = sum((cmd(s[a], s[b], cfg.cmd_moments) for a, b in itertools.combinations(mods, 2)), fused.new_zeros(()))
        l_sim = l_sim / max(1, len(mods) * (len(mods) - 1) // 2)
        l_recon = sum(F.mse_loss(self.recon[m](p[m] + s[m]), o[m]) for m in mods) / len(mods)
        aux = cfg.diff_weight * l_diff + cfg.sim_weight * l_sim + cfg.recon_weight * l_recon
        return ModelOutput(outputs=reps_to_outputs(self.heads, fused), aux_loss=aux.float(),
                           extras={"diff": l_diff.detach(), "sim": l_sim.detach(), "recon": l_recon.detach()})
