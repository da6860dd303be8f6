"""Self-MM: self-supervised multi-task learning with unimodal labels (Yu et al., AAAI 2021), any subset of sets.

    per feature set m: x[m] (B, T_m, D_m), mask[m] (B, T_m)
      -> InputNorm
      -> text: mean over the words (Self-MM reads BERT's [CLS])                                    F_t (B, D_t)
         other: AuViSubNet, LSTM final state -> Dropout -> Linear                                   F_m (B, out_m)
      -> fusion:   concat F -> Dropout -> Linear -> ReLU (f_fusion) -> Linear -> ReLU -> task heads  outputs[task]
      -> per set:  F_m -> Dropout -> Linear -> ReLU (f_m) -> Linear -> ReLU -> Linear                 unimodal ŷ_m (B, 1)

Training (`label_loss`, called by the trainer with the batch): ULGM, the unimodal label generation module, keeps for
every training segment a label per set, starting at the multimodal label y. Each step it stores the segment's
features f_fusion and f_m, recomputes the positive/negative class centres of every space from the stored features,
and from the second time a segment is seen (its "epoch" n >= 2) moves its unimodal label towards

    ŷ_m = y/2 · δ_m/δ_f + (y + δ_m - δ_f)/2,   δ = (d_neg - d_pos) / d_pos  (distances to the centres),

clipped to [-H, H], with the running average (n-1)/(n+1) · old + 2/(n+1) · new. The unimodal loss is the mean of
tanh(|y_m - y|) · |ŷ_m - y_m| over the sets; the multimodal sentiment loss is the trainer's task loss.
ULGM acts on a regression task named `sentiment` only; without one Self-MM is its fusion network with plain heads.
Differences from MMSA's code: the text vector is the mean of the word vectors (no [CLS] among pooled words), and
class centres use the segments seen so far (MMSA's also average the zero features of segments not yet seen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._parts import LSTMSubNet, ZooConfig, ZooModel, masked_mean, present, reps_to_outputs, role, task_heads
from .contract import ModelOutput, register_model


@dataclass
class SelfMMConfig(ZooConfig):
    """MMSA 2.2.1 config/config_regression.json, key `self_mm`, datasetParams `mosi`: a_lstm_hidden_size 16,
    v_lstm_hidden_size 32, audio_out 16, video_out 32, post_fusion_dim 128, post_text_dim 32, post_audio_dim 16,
    post_video_dim 32, post_fusion_dropout 0.0, post_text_dropout 0.1, post_audio_dropout 0.1, post_video_dropout
    0.0, H 3.0, excludeZero true; trained there with batch_size 16, learning_rate_bert 5e-5, learning_rate_other
    1e-3 (audio/video 5e-3), weight_decay 1e-3, BERT fine-tuned."""

    audio_hidden: int = 16
    visual_hidden: int = 32
    audio_out: int = 16
    visual_out: int = 32
    post_fusion_dim: int = 128
    post_text_dim: int = 32
    post_audio_dim: int = 16
    post_visual_dim: int = 32
    post_fusion_dropout: float = 0.0
    post_text_dropout: float = 0.1
    post_audio_dropout: float = 0.1
    post_visual_dropout: float = 0.0
    H: float = 3.0


class PostNet(nn.Module):
    """Dropout -> Linear -> ReLU (the features ULGM reads) -> Linear -> ReLU; `out` adds a final Linear to 1."""

    def __init__(self, d_in: int, d: int, dropout: float, out: int | None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.layer_1, self.layer_2 = nn.Linear(d_in, d), nn.Linear(d, d)
        self.layer_3 = nn.Linear(d, out) if out else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # (B, d_in) -> features (B, d), output (B, d or out)
        f = F.relu(self.layer_1(self.dropout(x)))
        y = F.relu(self.layer_2(f))
        return f, (self.layer_3(y) if self.layer_3 is not None else y)


class ULGM:
    """Unimodal labels, stored features and class centres of the training segments (state outside the weights)."""

    def __init__(self, spaces: list[str], H: float) -> None:
        self.spaces, self.H = spaces, H
        self.index: dict[str, int] = {}
        self.labels: dict[str, Tensor] = {}  # space -> (N,), "fusion" holds y
        self.features: dict[str, Tensor] = {}  # space -> (N, d)
        self.seen = torch.zeros(0, dtype=torch.long)

    def rows(self, ids: list[str], y: Tensor, feats: dict[str, Tensor]) -> Tensor:
        """Row numbers of these segments, registering new ones with every label = y."""
        new = [i for i, s in enumerate(ids) if s not in self.index]
        for i in new:
            self.index[ids[i]] = len(self.index)
        if new:
            k = torch.tensor(new)
            for space in ["fusion", *self.spaces]:
                self.labels[space] = torch.cat([self.labels.get(space, torch.zeros(0)), y[k].cpu()])
                f = feats[space]
                self.features[space] = torch.cat([self.features.get(space, f.new_zeros(0, f.shape[1]).cpu()), torch.full((len(new), f.shape[1]), float("nan"))])
            self.seen = torch.cat([self.seen, torch.zeros(len(new), dtype=torch.long)])
        return torch.tensor([self.index[s] for s in ids])

    def centres(self, space: str) -> tuple[Tensor, Tensor] | None:
        f, y = self.features[space], self.labels[space]
        filled = ~f[:, 0].isnan()
        pos, neg = filled & (y > 0), filled & (y < 0)  # excludeZero
        if not pos.any() or not neg.any():
            return None
        return f[pos].mean(0), f[neg].mean(0)

    def update(self, rows: Tensor, feats: dict[str, Tensor]) -> None:
        """Store the features, then (segments seen before) move the unimodal labels."""
        for space, f in feats.items():
            self.features[space][rows] = f.detach().float().cpu()
        n = self.seen[rows] + 1  # this segment's epoch
        self.seen[rows] = n
        old = n >= 2
        cf = self.centres("fusion")
        if not old.any() or cf is None:
            return
        r, n = rows[old], n[old].float()

        def delta(space: str, c: tuple[Tensor, Tensor]) -> Tensor:
            f = self.features[space][r]
            d_pos, d_neg = (f - c[0]).norm(dim=-1), (f - c[1]).norm(dim=-1)
            return (d_neg - d_pos) / (d_pos + 1e-8)

        d_f = delta("fusion", cf)
        y = self.labels["fusion"][r]
        for space in self.spaces:
            c = self.centres(space)
            if c is None:
                continue
            d_s = delta(space, c)
            new = (0.5 * (d_s / (d_f + 1e-8)) * y + 0.5 * (y + d_s - d_f)).clamp(-self.H, self.H)
            self.labels[space][r] = (n - 1) / (n + 1) * self.labels[space][r] + 2 / (n + 1) * new


@register_model("self_mm", config=SelfMMConfig, paper="Yu et al. 2021, Learning Modality-Specific Representations with Self-Supervised Multi-Task Learning for Multimodal Sentiment Analysis (AAAI)",
                defaults_from="MMSA 2.2.1 config/config_regression.json: self_mm, datasetParams.mosi")
class SelfMM(ZooModel):
    """Self-MM: a late-fusion network trained with extra unimodal heads on self-generated unimodal labels."""

    def __init__(self, cfg: SelfMMConfig) -> None:
        super().__init__(cfg)
        self.subnets = nn.ModuleDict()
        self.post = nn.ModuleDict()
        widths = []
        self.ulgm_task = next((t.name for t in cfg.tasks if t.name == "sentiment" and t.kind == "regression"), None)
        for m, d in cfg.input_dims.items():
            r = role(m)
            if r == "text":
                w, post, drop = d, cfg.post_text_dim, cfg.post_text_dropout
            else:
                hid, w = (cfg.audio_hidden, cfg.audio_out) if r == "audio" else (cfg.visual_hidden, cfg.visual_out)
                self.subnets[m] = LSTMSubNet(d, hid, w)  # AuViSubNet
                post, drop = (cfg.post_audio_dim, cfg.post_audio_dropout) if r == "audio" else (cfg.post_visual_dim, cfg.post_visual_dropout)
            widths.append(w)
            if self.ulgm_task:
                self.post[m] = PostNet(w, post, drop, 1)
        self.post_fusion = PostNet(sum(widths), cfg.post_fusion_dim, cfg.post_fusion_dropout, None)
        self.heads = task_heads(cfg.post_fusion_dim, cfg.tasks)
        self.ulgm = ULGM(list(cfg.input_dims), cfg.H) if self.ulgm_task else None

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        x = self.normalise(x, mask)
        F_m = {m: (self.subnets[m](x[m], mask[m]) if m in self.subnets else masked_mean(x[m], mask[m])) * present(mask[m])
               for m in self.norms}
        f_fusion, h = self.post_fusion(torch.cat(list(F_m.values()), dim=-1))  # (B, post_fusion_dim) twice
        extras = {"f_fusion": f_fusion}
        for m, net in self.post.items():
            extras[f"f_{m}"], extras[f"y_{m}"] = net(F_m[m])  # (B, post_m), (B, 1)
        return ModelOutput(outputs=reps_to_outputs(self.heads, h), aux_loss=h.new_zeros(()), extras=extras)

    def label_loss(self, out: ModelOutput, batch: dict[str, Any]) -> Tensor | None:
        """ULGM's unimodal loss for this batch; updates the stored features and labels while training."""
        if self.ulgm is None or not self.training:
            return None
        y = batch["labels"][self.ulgm_task].reshape(-1).float()
        keep = ~y.isnan()
        if not keep.any():
            return None
        ids = [s for s, k in zip(batch["segment_id"], keep.tolist(), strict=True) if k]
        feats = {"fusion": out.extras["f_fusion"][keep]} | {m: out.extras[f"f_{m}"][keep] for m in self.post}
        rows = self.ulgm.rows(ids, y[keep], feats)
        y_f = self.ulgm.labels["fusion"][rows].to(y.device)
        loss = y.new_zeros(())
        for m in self.post:
            y_m = self.ulgm.labels[m][rows].to(y.device)
            loss = loss + (torch.tanh((y_m - y_f).abs()) * (out.extras[f"y_{m}"][keep].reshape(-1).float() - y_m).abs()).mean()
        self.ulgm.update(rows, feats)
        return loss
