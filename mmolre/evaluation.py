"""Running a model over a split and scoring its predictions; shared by training, `evaluate` and benchmarks."""

from __future__ import annotations

import contextlib
import json
import math
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .context import VideoContext, as_videos
from .data import StoreDataset, VideoLoader, make_loader
from .losses import task_loss
from .metrics import (
    BOOTSTRAP_RESAMPLES,
    classification_metrics,
    defined,
    emotion_presence_metrics,
    sentiment_regression_metrics,
)
from .tasks import TaskSpec


def amp_enabled(device: torch.device, amp: str) -> bool:
    """bf16 on CUDA (amp auto or bf16), on CPU only when asked for explicitly."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if not amp_enabled(device, amp):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_device(batch: dict[str, Any], device: torch.device) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    nb = device.type == "cuda"
    x = {m: v.to(device, non_blocking=nb) for m, v in batch["x"].items()}
    mask = {m: v.to(device, non_blocking=nb) for m, v in batch["mask"].items()}
    labels = {k: v.to(device, non_blocking=nb) for k, v in batch["labels"].items()}
    return x, mask, labels


def task_predictions(task: TaskSpec, out: Tensor) -> np.ndarray:
    """Regression value clipped to [-3, 3], label probabilities (sigmoid) or class probabilities (softmax)."""
    out = out.float()
    if task.kind == "regression":
        return out[:, 0].clamp(-3.0, 3.0).cpu().numpy()
    if task.kind == "multilabel":
        return torch.sigmoid(out).cpu().numpy()
    return torch.softmax(out, dim=-1).cpu().numpy()


_VIDEO_LOADERS: weakref.WeakKeyDictionary[StoreDataset, VideoLoader] = weakref.WeakKeyDictionary()


def video_loader(dataset: StoreDataset, batch_size: int) -> VideoLoader:
    """The unshuffled VideoLoader of a split, read once per dataset: a context model is scored on valid every
    epoch, and a VideoLoader reads its whole split into memory."""
    loader = _VIDEO_LOADERS.get(dataset)
    if loader is None or loader.batch_size != batch_size:
        loader = _VIDEO_LOADERS[dataset] = VideoLoader(dataset, batch_size)
    return loader


@torch.no_grad()
def predict_split(
    model: nn.Module,
    dataset: StoreDataset,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    amp: str = "auto",
    regression_loss: str = "l1",
) -> dict[str, Any]:
    """Predictions, truths and mean unweighted losses of every task over a whole split."""
    was_training = model.training
    model.eval()
    tasks: list[TaskSpec] = list(model.config.tasks)
    ids: list[str] = []
    preds: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
    truths: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
    loss_sum = {t.name: 0.0 for t in tasks}
    loss_n = {t.name: 0 for t in tasks}
    # a context model sees whole videos; its outputs come back one per segment, in the batch's row order
    context = isinstance(model, VideoContext)
    loader = video_loader(dataset, batch_size) if context else make_loader(dataset, batch_size, num_workers, pin_memory=device.type == "cuda")
    for batch in loader:
        x, mask, labels = to_device(as_videos(batch), device)
        with autocast(device, amp):
            out = model(x, mask).outputs
        ids += batch["segment_id"]
        for t in tasks:
            loss, n = task_loss(t, out[t.name].float(), labels[t.name], regression_loss)
            loss_sum[t.name] += float(loss) * int(n)
            loss_n[t.name] += int(n)
            preds[t.name].append(task_predictions(t, out[t.name]))
            truths[t.name].append(batch["labels"][t.name].numpy())
    model.train(was_training)
    result: dict[str, Any] = {"segment_id": ids, "tasks": tasks}
    for t in tasks:
        result[t.name] = {
            "pred": np.concatenate(preds[t.name]) if preds[t.name] else np.zeros((0,)),
            "truth": np.concatenate(truths[t.name]) if truths[t.name] else np.zeros((0,)),
            "loss": loss_sum[t.name] / loss_n[t.name] if loss_n[t.name] else float("nan"),
        }
    return result


def score(predictions: dict[str, Any], resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, dict[str, Any]]:
    """Metrics per task with their support (and, with `resamples`, bootstrap intervals of the headline metrics),
    plus `loss` per task and overall (the unweighted sum of the task losses that are defined).

    Training's per-epoch validation passes `resamples=0`: intervals are for the reported figures only."""
    out: dict[str, dict[str, Any]] = {}
    total, any_loss = 0.0, False
    for t in predictions["tasks"]:
        p = predictions[t.name]
        if t.kind == "regression":
            m = sentiment_regression_metrics(p["pred"], p["truth"], resamples=resamples)
        elif t.kind == "multilabel":
            k = len(t.classes)
            m = emotion_presence_metrics(p["pred"].reshape(-1, k), p["truth"].reshape(-1, k), t.classes, resamples=resamples)
        else:
            m = classification_metrics(p["pred"].reshape(-1, len(t.classes)).argmax(-1), p["truth"], t.classes, resamples=resamples)
        m["loss"] = defined(p["loss"])
        if m["loss"] is not None:
            total, any_loss = total + m["loss"], True
        out[t.name] = m
    out["overall"] = {"loss": total if any_loss else None}
    return out


def flatten(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"sentiment": {"mae": ..}} -> {"sentiment/mae": ..}; overall loss becomes "loss"."""
    flat = {}
    for task, m in metrics.items():
        for k, v in m.items():
            flat[k if task == "overall" else f"{task}/{k}"] = v
    return flat


def selection_value(metrics: dict[str, dict[str, Any]], select: str) -> tuple[str, float]:
    """The (name, value) model selection compares: one metric, or the mean of a comma-separated list.
    An undefined metric gives NaN, which never counts as an improvement."""
    flat = flatten(metrics)
    names = ["loss"] if select in ("auto", "loss") else [s.strip() for s in select.split(",") if s.strip()]
    missing = [n for n in names if n not in flat]
    if missing:
        raise ValueError(f"select_metric {select!r}: no metric {', '.join(missing)}; available: {', '.join(sorted(flat))}")
    values = [math.nan if flat[n] is None else float(flat[n]) for n in names]
    return ",".join(names), float(np.mean(values))


def json_ready(obj: Any) -> Any:
    """A copy that `json.dumps(..., allow_nan=False)` accepts: NaN/inf -> None, numpy scalars -> Python, paths -> str."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return defined(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    return obj


def results_json(obj: Any, indent: int | None = 2) -> str:
    """JSON for results.json and `--json` output: undefined metrics are null, never NaN."""
    return json.dumps(json_ready(obj), indent=indent, allow_nan=False, default=str)


def predictions_frame(predictions: dict[str, Any]) -> pd.DataFrame:
    """One row per segment: predictions and truths of every task, in readable columns."""
    cols: dict[str, Any] = {"segment_id": predictions["segment_id"]}
    for t in predictions["tasks"]:
        p, y = predictions[t.name]["pred"], predictions[t.name]["truth"]
        if t.kind == "regression":
            cols[f"{t.name}_pred"], cols[f"{t.name}_true"] = p, y
        elif t.kind == "multilabel":
            for j, c in enumerate(t.classes):
                cols[f"{t.name}_{c}_prob"], cols[f"{t.name}_{c}_true"] = p[:, j], y[:, j]
        else:
            cols[f"{t.name}_pred"] = [t.classes[i] for i in p.argmax(-1)]
            cols[f"{t.name}_true"] = [t.classes[i] if i >= 0 else None for i in y]
    return pd.DataFrame(cols)

