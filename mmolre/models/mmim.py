"""MMIM: MultiModal InfoMax (Han et al., EMNLP 2021), any subset of feature sets.

    per feature set m: x[m] (B, T_m, D_m), mask[m] (B, T_m)
      -> InputNorm
      -> text: mean over the words (MMIM reads BERT's [CLS])                                     h_t (B, D_t)
         other: RNNEncoder, bidirectional LSTM final states -> Dropout -> Linear                  h_m (B, d_out)
      -> fusion SubNet: concat h -> Dropout -> Linear -> Tanh  (the fusion Z)                     (B, d_prjh)
      -> heads                                                                                   one Linear per task

aux_loss = alpha · L_CPC - beta · LLD, MMIM's second-stage objective beside the task loss:
  LLD (MMILB, input level): for every non-text set m, a Gaussian q(h_m | h_t) = N(mu(h_t), exp(logvar(h_t)))
      and its log-likelihood of the batch's h_m (the lower bound of I(text; m) without its entropy term);
  L_CPC (fusion level): for every set, Z predicts h_m through a linear map; InfoNCE of the true pair against the
      batch (contrastive predictive coding), which maximises a bound on I(Z; h_m).
Differences from MMSA's code: one training stage (MMIM alternates a stage that trains only MMILB's networks on -LLD);
no entropy estimate from a memory of past batches (mem_size 1 and add_va false in MMSA's config make it small);
logvar is bounded by a tanh so LLD cannot grow without limit; the text vector is the mean of the word vectors.
With text alone there is no MMILB pair and LLD is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._parts import LSTMSubNet, ZooConfig, ZooModel, masked_mean, present, reps_to_outputs, role, task_heads
from .contract import ModelOutput, register_model


@dataclass
class MMIMConfig(ZooConfig):
    """MMSA 2.2.1 config/config_regression.json, key `mmim`, datasetParams `mosi`: d_ah 16, d_vh 16, d_aout 16,
    d_vout 16, bidirectional true, d_prjh 128, dropout_a 0.1, dropout_v 0.1, dropout_prj 0.1, alpha 0.1 (CPC),
    beta 0.1 (LLD), mmilb_mid_activation ReLU; trained there with batch_size 32, lr_main 1e-3, lr_bert 5e-5,
    grad_clip 1.0, Adam."""

    audio_hidden: int = 16
    visual_hidden: int = 16
    audio_out: int = 16
    visual_out: int = 16
    d_prjh: int = 128
    dropout: float = 0.1  # dropout_a, dropout_v
    dropout_prj: float = 0.1
    alpha: float = 0.1
    beta: float = 0.1


class MMILB(nn.Module):
    """q(y | x) as a Gaussian with MLP mean and (bounded) log-variance; forward gives the mean log-likelihood."""

    def __init__(self, x_size: int, y_size: int) -> None:
        super().__init__()
        self.mlp_mu = nn.Sequential(nn.Linear(x_size, y_size), nn.ReLU(), nn.Linear(y_size, y_size))
        self.mlp_logvar = nn.Sequential(nn.Linear(x_size, y_size), nn.ReLU(), nn.Linear(y_size, y_size), nn.Tanh())

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # (B, x_size), (B, y_size) -> ()
        mu, logvar = self.mlp_mu(x), self.mlp_logvar(x)
        return (-0.5 * ((mu - y) ** 2 / logvar.exp() + logvar)).sum(-1).mean()


class CPC(nn.Module):
    """InfoNCE of Z predicting h_m: the true pair scored against every other segment of the batch."""

    def __init__(self, z_size: int, y_size: int) -> None:
        super().__init__()
        self.net = nn.Linear(z_size, y_size)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:  # (B, z_size), (B, y_size) -> ()
        p = F.normalize(self.net(z), dim=-1)
        y = F.normalize(y, dim=-1)
        scores = p @ y.t()  # (B, B)
        return -(scores.diagonal() - torch.logsumexp(scores, dim=-1)).mean()


@register_model("mmim", config=MMIMConfig, paper="Han et al. 2021, Improving Multimodal Fusion with Hierarchical Mutual Information Maximization for Multimodal Sentiment Analysis (EMNLP)",
                defaults_from="MMSA 2.2.1 config/config_regression.json: mmim, datasetParams.mosi")
class MMIM(ZooModel):
    """MultiModal InfoMax: late fusion trained to keep mutual information between the inputs and with the fusion."""

    def __init__(self, cfg: MMIMConfig) -> None:
        super().__init__(cfg)
        self.encoders = nn.ModuleDict()
        widths: dict[str, int] = {}
        for m, d in cfg.input_dims.items():
            r = role(m)
            if r == "text":
                widths[m] = d
            else:
                hid, out = (cfg.audio_hidden, cfg.audio_out) if r == "audio" else (cfg.visual_hidden, cfg.visual_out)
                self.encoders[m] = LSTMSubNet(d, hid, out, cfg.dropout, bidirectional=True)  # RNNEncoder
                widths[m] = out
        self.text = next((m for m in cfg.input_dims if role(m) == "text"), None)
        self.mmilb = nn.ModuleDict({m: MMILB(widths[self.text], w) for m, w in widths.items() if self.text and m != self.text})
        self.cpc = nn.ModuleDict({m: CPC(cfg.d_prjh, w) for m, w in widths.items()})
        self.fusion_prj = nn.Sequential(nn.Dropout(cfg.dropout_prj), nn.Linear(sum(widths.values()), cfg.d_prjh), nn.Tanh())
        self.heads = task_heads(cfg.d_prjh, cfg.tasks)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        x = self.normalise(x, mask)
        h = {m: (self.encoders[m](x[m], mask[m]) if m in self.encoders else masked_mean(x[m], mask[m])) * present(mask[m])
             for m in self.norms}
        z = self.fusion_prj(torch.cat(list(h.values()), dim=-1))  # (B, d_prjh)
        lld = sum((net(h[self.text], h[m]) for m, net in self.mmilb.items()), z.new_zeros(()))
        nce = sum((net(z, h[m]) for m, net in self.cpc.items()), z.new_zeros(()))
        aux = self.config.alpha * nce - self.config.beta * lld
        return ModelOutput(outputs=reps_to_outputs(self.heads, z), aux_loss=aux.float(), extras={"lld": lld.detach(), "nce": nce.detach()})
