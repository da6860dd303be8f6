"""Per-task losses with missing labels masked out, and how the tasks' losses are weighted into one.

Every loss is a masked mean that keeps the graph connected even when a batch has no label for a task, so
distributed training never sees an unused parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.contract import ModelOutput, label_loss
from .tasks import TaskSpec


def task_loss(
    task: TaskSpec,
    out: Tensor,
    target: Tensor,
    regression: str = "l1",
    pos_weight: Tensor | None = None,
    class_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean loss over the labelled items of a batch, and how many there were.

    out: (B, 1) regression value, (B, C) logits; target: (B,) float (NaN = missing), (B, C) presence (NaN = missing),
    or (B,) class index (-1 = missing)."""
    if task.kind == "regression":
        pred = out[:, 0].float()
        valid = torch.isfinite(target)
        t = torch.where(valid, target, torch.zeros_like(target)).float()
        fn = {"l1": F.l1_loss, "mse": F.mse_loss, "smooth_l1": F.smooth_l1_loss}[regression]
        per = fn(pred, t, reduction="none")
    elif task.kind == "multilabel":
        valid = torch.isfinite(target)
        t = torch.where(valid, target, torch.zeros_like(target)).float()
        per = F.binary_cross_entropy_with_logits(out.float(), t, reduction="none", pos_weight=pos_weight)
    else:
        valid = target >= 0
        per = F.cross_entropy(out.float(), target.clamp(min=0).long(), weight=class_weight, reduction="none")
        if class_weight is not None:  # weighted mean, as nn.CrossEntropyLoss computes it
            w = class_weight[target.clamp(min=0).long()] * valid
            return (per * valid).sum() / w.sum().clamp(min=1e-8), valid.sum()
    n = valid.sum()
    return (per * valid).sum() / n.clamp(min=1), n


class TaskWeighting(nn.Module):
    """Combines task losses: fixed weights, or homoscedastic uncertainty (Kendall et al. 2018), where each task
    has a learned log-variance s and contributes exp(-s) * L + s."""

    def __init__(self, tasks: Sequence[TaskSpec], mode: str = "fixed", weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.names = [t.name for t in tasks]
        self.mode = mode
        w = weights or {}
        self.register_buffer("fixed", torch.tensor([float(w.get(n, 1.0)) for n in self.names]))
        self.log_vars = nn.Parameter(torch.zeros(len(self.names))) if mode == "uncertainty" else None

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack([losses[n] for n in self.names])
        if self.log_vars is None:
            return (self.fixed * stacked).sum()
        return (torch.exp(-self.log_vars) * stacked + self.log_vars).sum()


class TrainStep(nn.Module):
    """The model plus its losses, so one (possibly DistributedDataParallel-wrapped) module returns the loss:
    the weighted task losses, plus the model's `aux_loss`, plus its `label_loss(out, batch)` where it has one."""

    def __init__(
        self,
        model: nn.Module,
        weighting: TaskWeighting,
        regression: str = "l1",
        pos_weight: dict[str, Tensor] | None = None,
        class_weight: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.weighting = model, weighting
        self.tasks: list[TaskSpec] = list(model.config.tasks)
        self.regression = regression
        for name, t in (pos_weight or {}).items():
            self.register_buffer(f"pos_weight_{name}", t)
        for name, t in (class_weight or {}).items():
            self.register_buffer(f"class_weight_{name}", t)

    def losses(self, outputs: dict[str, Tensor], labels: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            t.name: task_loss(
                t,
                outputs[t.name],
                labels[t.name],
                self.regression,
                getattr(self, f"pos_weight_{t.name}", None),
                getattr(self, f"class_weight_{t.name}", None),
            )[0]
            for t in self.tasks
        }

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor], labels: dict[str, Tensor],
                batch: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """`batch`: the collated batch (segment_id, labels on the device, ...) a model's `label_loss` reads."""
        out: ModelOutput = self.model(x, mask)
        parts = self.losses(out.outputs, labels)
        aux = out.aux_loss
        extra = label_loss(self.model, out, {**(batch or {}), "labels": labels})
        if extra is not None:
            aux = aux + extra
        total = self.weighting(parts) + aux
        return total, {**{k: v.detach() for k, v in parts.items()}, "aux": aux.detach()}
