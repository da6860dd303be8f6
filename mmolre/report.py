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

from .metrics import HEADLINE  # noqa: E402  (re-exported: the CLI and summaries show the same metrics)

__all__ = ["HEADLINE", "fmt", "fmt_ci", "plot_class_f1", "plot_losses", "plot_sentiment", "write_plots", "write_report"]


def fmt(v: Any, digits: int = 3) -> str:
    """A number as reports show it: 3 decimals, thousands separators for counts, `n/a` when undefined."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return str(v)


def fmt_ci(ci: Any, digits: int = 3) -> str:
    """[low, high] as "[0.680, 0.740]"; empty when there is no interval."""
    return f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""


def _series(history: list[dict[str, Any]], key: str) -> list[float]:
    return [math.nan if h.get(key) is None else float(h[key]) for h in history]


def plot_losses(history: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, _series(history, "train_loss"), marker="o", label="train (weighted total)")
    for key in sorted({k for h in history for k in h if k.startswith("train_loss/")}):
        ax.plot(epochs, _series(history, key), linestyle=":", label=key.replace("train_loss/", "train "))
    if any("valid/loss" in h for h in history):
        ax.plot(epochs, _series(history, "valid/loss"), marker="s", label="valid (sum of task losses)")
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


def _class_support(m: dict[str, Any], kind: str, c: str) -> str:
    if kind == "multilabel":
        return f"+{m.get(f'{c}_n_pos', '?')}/-{m.get(f'{c}_n_neg', '?')}"
    return f"n={m.get(f'{c}_n', '?')}"


def plot_class_f1(tasks: list[dict[str, Any]], metrics: dict[str, Any], path: Path, title: str = "test") -> Path:
    """F1 per class of every class task (one panel each): bars with their value, `n/a` where the split's truth
    makes F1 undefined, each class's support under its name (+positives/-negatives for presence labels)."""
    panels = [t for t in tasks if t["kind"] in ("multilabel", "multiclass") and t["name"] in metrics]
    fig, axes = plt.subplots(1, len(panels), width_ratios=[len(t["classes"]) + 1 for t in panels], figsize=(max(4.0, 1.0 * sum(len(t["classes"]) for t in panels) + 1.2 * len(panels)), 4.2),
                             squeeze=False)
    for ax, t in zip(axes[0], panels, strict=True):
        m = metrics[t["name"]]
        classes = list(t["classes"])
        values = [m.get(f"{c}_f1") for c in classes]
        heights = [v if isinstance(v, (int, float)) and math.isfinite(v) else 0.0 for v in values]
        x = np.arange(len(classes))
        ax.bar(x, heights, color="tab:blue")
        for i, v in enumerate(values):
            ax.text(i, heights[i] + 0.02, fmt(v, 2), ha="center", va="bottom", fontsize=8,
                    color="black" if heights[i] or v is not None else "grey")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{c}\n{_class_support(m, t['kind'], c)}" for c in classes], fontsize=8)
        ax.set_ylim(0, 1.12)  # room for the value labels below the panel title
        ax.set_ylabel("F1")
        ax.set_xlabel("+segments present / -absent" if t["kind"] == "multilabel" else "n = segments of the class", fontsize=8)
        what = "presence F1" if t["kind"] == "multilabel" else "class F1"
        ax.set_title(f"{t['name']} {what} (n={fmt(m.get('n'))})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"F1 per class, {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(results: dict[str, Any], frame: pd.DataFrame | None, out: Path, split: str = "test") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_losses(results["history"], out / "loss_curves.png")] if results.get("history") else []
    tasks = {t["name"]: t for t in results["tasks"]}
    metrics = results.get(split) or {}
    if frame is not None and len(frame) and "sentiment" in tasks and tasks["sentiment"]["kind"] == "regression":
        paths.append(plot_sentiment(frame, out / "sentiment_pred_vs_true.png", split))
    if any(t["kind"] != "regression" and t["name"] in metrics for t in results["tasks"]):
        paths.append(plot_class_f1(results["tasks"], metrics, out / "emotion_f1.png", split))
    return paths


def _support_line(task: str, kind: str, m: dict[str, Any]) -> str:
    line = f"**{task}** (n = {fmt(m.get('n'))}"
    if kind == "regression":
        line += (f"; Has0: {fmt(m.get('has0_n_pos'))} non-negative / {fmt(m.get('has0_n_neg'))} negative"
                 f"; Non0: n = {fmt(m.get('non0_n'))}, {fmt(m.get('non0_n_pos'))} positive / {fmt(m.get('non0_n_neg'))} negative")
    return line + ")"


def _metric_table(task: str, kind: str, m: dict[str, Any]) -> list[str]:
    keys = [k for k in HEADLINE[kind] if k in m] + (["loss"] if "loss" in m else [])
    lines = [_support_line(task, kind, m), "", "| metric | value | 95% CI |", "|---|---|---|"]
    lines += [f"| {k} | {fmt(m[k])} | {fmt_ci(m.get(f'{k}_ci'))} |" for k in keys]
    lines.append("")
    if kind == "multilabel":
        classes = [k[: -len("_n_pos")] for k in m if k.endswith("_n_pos")]
        lines += ["| emotion | n present | n absent | acc | wacc | F1 | wF1 |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {c} | {fmt(m.get(f'{c}_n_pos'))} | {fmt(m.get(f'{c}_n_neg'))} | {fmt(m.get(f'{c}_acc'))} | "
                  f"{fmt(m.get(f'{c}_wacc'))} | {fmt(m.get(f'{c}_f1'))} | {fmt(m.get(f'{c}_wf1'))} |" for c in classes]
        lines.append("")
    elif kind == "multiclass":
        classes = [k[: -len("_n")] for k in m if k.endswith("_n") and f"{k[:-2]}_f1" in m]
        lines += ["| class | n | F1 |", "|---|---|---|"]
        lines += [f"| {c} | {fmt(m.get(f'{c}_n'))} | {fmt(m.get(f'{c}_f1'))} |" for c in classes]
        lines.append("")
    return lines


def write_report(results: dict[str, Any], out: Path, plots: list[Path]) -> Path:
    """report.md: what was trained on what, the selected epoch, headline metrics per split with their n and
    95% bootstrap intervals, per-class support, warnings, the plots."""
    store = results["store"]
    store_text = f"`{store['path']}` (manifest sha256 {store['manifest_sha256'][:12]})" if isinstance(store, dict) else f"`{store}`"
    params = results.get("params") or {}
    lines = [
        f"# {results['model']} on {results['store_name']}",
        "",
        f"- store: {store_text}; feature sets: {', '.join(results['feature_sets'])}",
        f"- splits: {', '.join(f'{k} {fmt(v)}' for k, v in (results.get('splits') or {}).items())}",
        f"- tasks: {', '.join(t['name'] + ' (' + t['kind'] + ')' for t in results['tasks'])}",
        f"- parameters: {fmt(params.get('total', results['parameters']['total']))} total, "
        f"{fmt(params.get('trainable', results['parameters']['total']))} trainable, {fmt(results['parameters']['experts'])} in experts",
        f"- epochs run: {results['epochs_run']}, best epoch {results['best_epoch']} by {results['select_metric']} = {fmt(results['best_value'])}",
        f"- device: {results['device']} x {results['world_size']}, amp {results['amp']}; status: {results['status']}",
        "",
    ]
    for m, why in (results.get("dropped_feature_sets") or {}).items():
        lines.insert(-1, f"- left out: feature set `{m}` ({why})")
    if results.get("defaults"):
        lines += ["## defaults chosen for this store", ""] + [f"- {d}" for d in results["defaults"]] + [""]
    if results.get("warnings"):
        lines += ["## warnings", ""] + [f"- {w}" for w in results["warnings"]] + [""]
    kinds = {t["name"]: t["kind"] for t in results["tasks"]}
    for split in ("valid", "test"):
        if not results.get(split):
            lines += [f"## {split}", "", f"No {split} split in the store: nothing scored.", ""]
            continue
        lines += [f"## {split}", ""]
        for task, m in results[split].items():
            if task in kinds:
                lines += _metric_table(task, kinds[task], m)
    if results.get("throughput"):
        lines += ["## throughput", ""] + [f"- {k}: {fmt(v)}" for k, v in results["throughput"].items()] + [""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    lines += [
        "",
        "n is the number of segments scored; 95% CI is a percentile bootstrap over segments (seed 0, 1,000 resamples); "
        "n/a marks a metric the split cannot define (one class in the truth, a constant prediction or truth for a correlation).",
        "Acc-7 rounds half to even after clipping (MMSA); acc7_sdk uses the CMU-MultimodalSDK README's bins.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
