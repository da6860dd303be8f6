"""LMF: Low-rank Multimodal Fusion (Liu et al., ACL 2018), for any subset of feature sets.

    per feature set m: x[m] (B, T, D_m), mask[m] (B, T)
      -> InputNorm, then TFN's sub-networks (text: LSTM; audio/visual: masked mean + 3 ReLU layers)  z_m (B, h_m)
      -> per set, r modality-specific factors W_m (r, h_m + 1, O):   (1, z_m) W_m            (r, B, O)
      -> elementwise product over sets, weighted sum over the r ranks + bias               (B, O)
      -> split per task                                                                    outputs[task] (B, out_dim)

This is TFN's outer-product tensor followed by a linear layer, computed without forming the tensor: the weight
tensor is a sum of r rank-one terms, one factor per modality. O is the sum of the tasks' output sizes, so LMF fuses
straight to every task's outputs, as the paper fuses straight to the prediction. Differences from MMSA's code: no
BatchNorm in the sub-networks (InputNorm instead), as in tfn.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._parts import ZooConfig, ZooModel, present
from .contract import ModelOutput, register_model
from .tfn import subnet, with_one


@dataclass
class LMFConfig(ZooConfig):
    """MMSA 2.2.1 config/config_regression.json, key `lmf`, datasetParams `mosi`: hidden_dims [128, 16, 128]
    (text, audio, video; text_out = text_hidden // 2 in MMSA's LMF), dropouts 0.3, rank 3; trained there with
    batch_size 64, learning_rate 1e-3 (factor_lr 1e-3), weight_decay 5e-3."""

    text_hidden: int = 128
    text_out: int = 64
    audio_hidden: int = 16
    visual_hidden: int = 128
    rank: int = 3
    dropout: float = 0.3


@register_model("lmf", config=LMFConfig, paper="Liu et al. 2018, Efficient Low-rank Multimodal Fusion with Modality-Specific Factors (ACL)",
                defaults_from="MMSA 2.2.1 config/config_regression.json: lmf, datasetParams.mosi")
class LMF(ZooModel):
    """Low-rank Multimodal Fusion: TFN's fusion with the weight tensor factorised into rank-one modality factors."""

    def __init__(self, cfg: LMFConfig) -> None:
        super().__init__(cfg)
        self.out_dims = [t.out_dim for t in cfg.tasks]
        n_out = sum(self.out_dims)
        self.subnets = nn.ModuleDict()
        self.factors = nn.ParameterDict()
        for m, d in cfg.input_dims.items():
            self.subnets[m], h = subnet(m, d, cfg)
            self.factors[m] = nn.Parameter(nn.init.xavier_normal_(torch.empty(cfg.rank, h + 1, n_out)))  # W_m
        self.fusion_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, cfg.rank)))
        self.fusion_bias = nn.Parameter(torch.zeros(1, n_out))

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        x = self.normalise(x, mask)
        fusion_zy = None
        for m, net in self.subnets.items():
            z1 = with_one(net(x[m], mask[m]) * present(mask[m]))  # (B, h_m + 1)
            f = torch.matmul(z1, self.factors[m])  # (r, B, O)
            fusion_zy = f if fusion_zy is None else fusion_zy * f
        out = torch.einsum("r,rbo->bo", self.fusion_weights[0], fusion_zy) + self.fusion_bias  # (B, O)
        outputs = dict(zip((t.name for t in self.tasks), out.float().split(self.out_dims, dim=1), strict=True))
        return ModelOutput(outputs=outputs, aux_loss=out.new_zeros(()))
