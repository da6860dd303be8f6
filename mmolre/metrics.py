"""Evaluation metrics, computed the way the field reports them so our numbers compare with published ones.

Sentiment regression follows MMSA (`metricsTop.py`): MAE, Pearson Corr, Acc-7 / Acc-5 by clipping prediction and
truth to [-3, 3] / [-2, 2] and rounding half to even (`np.round`), Has0 Acc-2/F1 (truth >= 0 vs pred >= 0) and
Non0 Acc-2/F1 (segments with truth exactly 0 dropped, then > 0 vs > 0); F1 is sklearn's weighted F1.
`acc7_sdk` is a second 7-class accuracy with the CMU-MultimodalSDK README's bins (see `sdk_sentiment_class`).

Emotions (MOSEI, multi-label presence): per emotion accuracy, weighted accuracy (TP*N/P + TN) / 2N, F1 of the
positive class and weighted F1, plus their means. Single-label classes (MELD): accuracy, weighted F1, macro F1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

NAN = float("nan")


def _flat(a: np.ndarray | Sequence[float]) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def multiclass_acc(pred: np.ndarray, truth: np.ndarray) -> float:
    """MMSA's `__multiclass_acc`: fraction where np.round (half to even) of both agree."""
    return float(np.sum(np.round(pred) == np.round(truth)) / float(len(truth))) if len(truth) else NAN


def sdk_sentiment_class(x: np.ndarray) -> np.ndarray:
    """7 classes as the CMU-MultimodalSDK README bins them: exactly 0 is neutral, any positive value up to 1 is
    weakly positive (+1), (1, 2] positive (+2), (2, 3] strongly positive (+3), mirrored for negatives.

    So 0.3 -> +1 here, where MMSA's rounding gives 0."""
    x = np.clip(_flat(x), -3.0, 3.0)
    return np.where(x > 0, np.ceil(x), np.floor(x)).astype(np.int64)


def sentiment_regression_metrics(pred: np.ndarray | Sequence[float], truth: np.ndarray | Sequence[float]) -> dict[str, float]:
    """MMSA's regression metrics (`__eval_mosei_regression`) plus `acc7_sdk` and `acc3`."""
    pred, truth = _flat(pred), _flat(truth)
    keep = np.isfinite(truth)
    pred, truth = pred[keep], truth[keep]
    if len(truth) == 0:
        return {k: NAN for k in ("has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc3", "acc5", "acc7", "acc7_sdk", "mae", "corr")} | {"n": 0}
    p7, t7 = np.clip(pred, -3.0, 3.0), np.clip(truth, -3.0, 3.0)
    p5, t5 = np.clip(pred, -2.0, 2.0), np.clip(truth, -2.0, 2.0)
    p3, t3 = np.clip(pred, -1.0, 1.0), np.clip(truth, -1.0, 1.0)
    out: dict[str, float] = {}
    nz = truth != 0
    if nz.any():
        out["non0_acc2"] = float(accuracy_score(truth[nz] > 0, pred[nz] > 0))
        out["non0_f1"] = float(f1_score(truth[nz] > 0, pred[nz] > 0, average="weighted", zero_division=0))
    else:
        out["non0_acc2"] = out["non0_f1"] = NAN
    out["has0_acc2"] = float(accuracy_score(truth >= 0, pred >= 0))
    out["has0_f1"] = float(f1_score(truth >= 0, pred >= 0, average="weighted", zero_division=0))
    out["acc3"] = multiclass_acc(p3, t3)
    out["acc5"] = multiclass_acc(p5, t5)
    out["acc7"] = multiclass_acc(p7, t7)
    out["acc7_sdk"] = float(np.mean(sdk_sentiment_class(pred) == sdk_sentiment_class(truth)))
    out["mae"] = float(np.mean(np.abs(pred - truth)))
    out["corr"] = float(np.corrcoef(pred, truth)[0, 1]) if len(truth) > 1 and pred.std() > 0 and truth.std() > 0 else NAN
    out["n"] = int(len(truth))
    return out


def weighted_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """(TP * N/P + TN) / 2N = mean of the recalls of both classes (Tong et al.; common MOSEI practice).

    With only one class present it is that class's recall."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    p, n = int(truth.sum()), int((~truth).sum())
    tp, tn = int((pred & truth).sum()), int((~pred & ~truth).sum())
    if p and n:
        return (tp * n / p + tn) / (2 * n)
    if p:
        return tp / p
    return tn / n if n else NAN


def emotion_presence_metrics(
    prob: np.ndarray, truth: np.ndarray, emotions: Sequence[str], threshold: float = 0.5
) -> dict[str, float]:
    """Per emotion (presence = truth > 0, predicted = prob >= threshold): acc, wacc, f1 (positive class), wf1
    (sklearn weighted), and their means. NaN truths (missing labels) are left out per emotion."""
    prob, truth = np.asarray(prob, np.float64), np.asarray(truth, np.float64)
    out: dict[str, float] = {}
    for j, name in enumerate(emotions):
        keep = np.isfinite(truth[:, j])
        t, p = truth[keep, j] > 0, prob[keep, j] >= threshold
        if not keep.any():
            out.update({f"{name}_acc": NAN, f"{name}_wacc": NAN, f"{name}_f1": NAN, f"{name}_wf1": NAN})
            continue
        out[f"{name}_acc"] = float(accuracy_score(t, p))
        out[f"{name}_wacc"] = float(weighted_accuracy(p, t))
        out[f"{name}_f1"] = float(f1_score(t, p, zero_division=0))
        out[f"{name}_wf1"] = float(f1_score(t, p, average="weighted", zero_division=0))
    for m in ("acc", "wacc", "f1", "wf1"):
        vals = [out[f"{e}_{m}"] for e in emotions if np.isfinite(out[f"{e}_{m}"])]
        out[f"{m}_mean"] = float(np.mean(vals)) if vals else NAN
    out["n"] = int(np.isfinite(truth).all(axis=1).sum())
    return out


def classification_metrics(pred: np.ndarray, truth: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Single-label classes (MELD): accuracy, weighted F1 (the MELD leaderboard's figure), macro F1, per-class F1.
    `pred` and `truth` are class indices; truths < 0 are missing labels and left out."""
    pred, truth = np.asarray(pred, np.int64).reshape(-1), np.asarray(truth, np.int64).reshape(-1)
    keep = truth >= 0
    pred, truth = pred[keep], truth[keep]
    if len(truth) == 0:
        return {"acc": NAN, "wf1": NAN, "macro_f1": NAN, "n": 0}
    labels = list(range(len(classes)))
    out = {
        "acc": float(accuracy_score(truth, pred)),
        "wf1": float(f1_score(truth, pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0)),
    }
    per = f1_score(truth, pred, labels=labels, average=None, zero_division=0)
    out.update({f"{c}_f1": float(v) for c, v in zip(classes, per, strict=True)})
    out["n"] = int(len(truth))
    return out


# Metric names where lower is better; everything else is higher-is-better.
LOWER_IS_BETTER = ("loss", "mae")


def lower_is_better(metric: str) -> bool:
    """Whether a metric (or every metric of a comma list, whose mean selection compares) improves downwards."""
    names = [m.strip() for m in metric.split(",") if m.strip()]
    lower = {m: m.split("/")[-1].endswith(LOWER_IS_BETTER) for m in names}
    if len(set(lower.values())) > 1:
        raise ValueError(f"select_metric {metric!r} mixes metrics that improve downwards "
                         f"({', '.join(m for m in names if lower[m])}) and upwards "
                         f"({', '.join(m for m in names if not lower[m])}): their mean cannot be selected on")
    return bool(lower) and next(iter(lower.values()))
