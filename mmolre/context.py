"""Context across the utterances of a video (as bc-LSTM does, Poria et al., ACL 2017), for any of our models.

`VideoContext` wraps MMoLRE or a baseline. Its input is a batch of videos: per modality x[m] (V, L, D_m), one
utterance-level vector per utterance, and mask[m] (V, L) (present); `mask[UTTERANCES]` (V, L) says which of the
L slots are utterances (the first n of each row). Per modality it standardises with training-set statistics and
runs a bidirectional GRU over the video's utterances; each utterance's input to the wrapped model becomes its own
standardised vector next to the GRU's output at its position, as a one-step sequence of D_m + 2h. The wrapped
model then does what it always does, on the V x L utterances flattened in row order; its outputs are per
utterance in that order. An absent modality enters the GRU as zeros and stays masked for the wrapped model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .models.contract import ModelOutput, assemble_model, label_loss

UTTERANCES = "_utterances"  # the key of mask that marks real utterances in a batch of videos


class VideoContext(nn.Module):
    """A wrapped model that sees each utterance together with the other utterances of its video."""

    def __init__(self, build: Callable[[Any], nn.Module], cfg: Any, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = hidden
        self.mods = list(cfg.input_dims)
        self.mean = nn.ParameterDict({m: nn.Parameter(torch.zeros(d), requires_grad=False) for m, d in cfg.input_dims.items()})
        self.std = nn.ParameterDict({m: nn.Parameter(torch.ones(d), requires_grad=False) for m, d in cfg.input_dims.items()})
        self.gru = nn.ModuleDict({m: nn.GRU(d, hidden, batch_first=True, bidirectional=True) for m, d in cfg.input_dims.items()})
        self.drop = nn.Dropout(getattr(cfg, "dropout", 0.1))
        inner = replace(cfg, input_dims={m: d + 2 * hidden for m, d in cfg.input_dims.items()})
        self.model = build(inner)
        self.config = self.model.config

    def set_input_stats(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Training-set statistics standardise before the GRU; the wrapped model's own stay the identity."""
        for m, (mean, std) in stats.items():
            if m in self.mean:
                self.mean[m].data.copy_(torch.as_tensor(mean, dtype=torch.float32))
                self.std[m].data.copy_(torch.as_tensor(std, dtype=torch.float32))

    def label_loss(self, out: ModelOutput, batch: dict[str, Any]) -> Tensor | None:
        return label_loss(self.model, out, batch)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        utt = mask[UTTERANCES]  # (V, L)
        lengths = utt.sum(dim=1).clamp(min=1).cpu()
        flat_x, flat_mask = {}, {}
        for m in self.mods:
            z = ((x[m] - self.mean[m]) / self.std[m]) * mask[m][..., None]  # (V, L, D)
            packed = pack_padded_sequence(z, lengths, batch_first=True, enforce_sorted=False)
            ctx, _ = pad_packed_sequence(self.gru[m](packed)[0], batch_first=True, total_length=z.shape[1])  # (V, L, 2h)
            both = torch.cat([z, self.drop(ctx)], dim=-1)
            flat_x[m] = both[utt][:, None, :]  # (N, 1, D + 2h)
            flat_mask[m] = mask[m][utt][:, None]  # (N, 1)
        return self.model(flat_x, flat_mask)


def videos_of(segment_ids: list[str]) -> list[list[int]]:
    """Rows grouped by video (the id before the last `_`), utterances in their number's order."""
    groups: dict[str, list[tuple[int, int]]] = {}
    for i, sid in enumerate(segment_ids):
        vid, _, num = sid.rpartition("_")
        groups.setdefault(vid or sid, []).append((int(num) if num.isdigit() else i, i))
    return [[i for _, i in sorted(rows)] for _, rows in sorted(groups.items())]


def video_batch(x: dict[str, Tensor], mask: dict[str, Tensor], videos: list[list[int]]) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """One-step utterance inputs (N, 1, D) regrouped as videos (V, L, D), plus the flat row order of the result."""
    L = max(len(v) for v in videos)
    out_x, out_mask = {}, {}
    for m in x:
        D = x[m].shape[-1]
        xm, mm = torch.zeros(len(videos), L, D), torch.zeros(len(videos), L, dtype=torch.bool)
        for j, rows in enumerate(videos):
            xm[j, : len(rows)] = x[m][rows, 0]
            mm[j, : len(rows)] = mask[m][rows, 0]
        out_x[m], out_mask[m] = xm, mm
    utt = torch.zeros(len(videos), L, dtype=torch.bool)
    for j, rows in enumerate(videos):
        utt[j, : len(rows)] = True
    out_mask[UTTERANCES] = utt
    order = torch.tensor([i for rows in videos for i in rows])
    return out_x, out_mask, order


def as_videos(batch: dict[str, Any]) -> dict[str, Any]:
    """A `VideoLoader` batch (rows video after video, `videos` = their indices) reshaped for `VideoContext`; the
    flat order of the outputs is the rows' order, so labels and segment ids stay aligned. Others pass through."""
    if "videos" not in batch:
        return batch
    x, mask, _ = video_batch(batch["x"], batch["mask"], batch["videos"])
    return {**batch, "x": x, "mask": mask}


def wrap_in_context(model_name: str, arch: Any, hidden: int) -> nn.Module:
    """The registered `model_name` built for `arch` (the store's input dims) inside a `VideoContext`."""
    return VideoContext(lambda cfg: assemble_model(model_name, cfg), arch, hidden=hidden)
