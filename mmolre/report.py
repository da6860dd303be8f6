"""A run's report: PNG plots (loss curves, predicted vs true sentiment, per-emotion F1) and a markdown summary.

Plots use matplotlib's Agg backend so they render on servers without a display.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HEADLINE = {
    "regression": ["has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc5", "acc7", "acc7_sdk", "mae", "corr"],
    "multilabel": ["acc_mean", "wacc_mean", "f1_mean", "wf1_mean"],
    "multiclass": ["acc", "wf1", "macro_f1"],
}


def plot_losses(history: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train (weighted total)")
    for key in sorted({k for h in history for k in h if k.startswith("train_loss/")}):
        ax.plot(epochs, [h.get(key, math.nan) for h in history], linestyle=":", label=key.replace("train_loss/", "train "))
    if any("valid/loss" in h for h in history):
        ax.plot(epochs, [h.get("valid/loss", math.nan) for h in history], marker="s", label="valid (sum of task losses)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sentiment(frame: pd.DataFrame, path: Path, title: str = "test") -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(frame["sentiment_true"], frame["sentiment_pred"], s=8, alpha=0.5)
    ax.plot([-3, 3], [-3, 3], color="grey", linewidth=1)
    ax.set_xlim(-3.2, 3.2)
    ax.set_ylim(-3.2, 3.2)
    ax.set_xlabel("true sentiment")
    ax.set_ylabel("predicted sentiment")
    ax.set_title(f"sentiment, {title}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_emotion_f1(metrics: dict[str, float], classes: list[str], path: Path, key: str = "f1", title: str = "test") -> Path:
    values = [metrics.get(f"{c}_{key}", math.nan) for c in classes]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(classes, values)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(f"emotion F1 per class, {title}")
    for i, v in enumerate(values):
        if np.isfinite(v):
            ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(results: dict[str, Any], frame: pd.DataFrame | None, out: Path, split: str = "test") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_losses(results["history"], out / "loss_curves.png")] if results.get("history") else []
    tasks = {t["name"]: t for t in results["tasks"]}
    metrics = results.get(split) or {}
    if frame is not None and "sentiment" in tasks and tasks["sentiment"]["kind"] == "regression":
        paths.append(plot_sentiment(frame, out / "sentiment_pred_vs_true.png", split))
    if "emotion" in tasks and "emotion" in metrics:
        paths.append(plot_emotion_f1(metrics["emotion"], tasks["emotion"]["classes"], out / "emotion_f1.png", "f1", split))
    return paths


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_report(results: dict[str, Any], out: Path, plots: list[Path]) -> Path:
    """report.md: what was trained on what, the selected epoch, headline metrics per split, the plots."""
    lines = [
        f"# {results['model']} on {results['store_name']}",
        "",
        f"- store: `{results['store']}`; feature sets: {', '.join(results['feature_sets'])}",
        f"- tasks: {', '.join(t['name'] + ' (' + t['kind'] + ')' for t in results['tasks'])}",
        f"- parameters: {results['parameters']['total']:,} total, {results['parameters']['experts']:,} in experts",
        f"- epochs run: {results['epochs_run']}, best epoch {results['best_epoch']} by {results['select_metric']} = {_fmt(results['best_value'])}",
        f"- device: {results['device']} x {results['world_size']}, amp {results['amp']}; status: {results['status']}",
        "",
    ]
    kinds = {t["name"]: t["kind"] for t in results["tasks"]}
    for split in ("valid", "test"):
        if not results.get(split):
            continue
        lines += [f"## {split}", ""]
        for task, m in results[split].items():
            if task not in kinds:
                continue
            keys = [k for k in HEADLINE[kinds[task]] if k in m]
            lines += [f"**{task}**", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys), "| " + " | ".join(_fmt(m[k]) for k in keys) + " |", ""]
    if results.get("throughput"):
        lines += ["## throughput", ""] + [f"- {k}: {_fmt(v)}" for k, v in results["throughput"].items()] + [""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "Acc-7 rounds half to even after clipping (MMSA); acc7_sdk uses the CMU-MultimodalSDK README's bins.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
