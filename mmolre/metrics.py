"""Evaluation metrics, computed the way the field reports them so our numbers compare with published ones.

Sentiment regression follows MMSA (`metricsTop.py`): MAE, Pearson Corr, Acc-7 / Acc-5 by clipping prediction and
truth to [-3, 3] / [-2, 2] and rounding half to even (`np.round`), Has0 Acc-2/F1 (truth >= 0 vs pred >= 0) and
Non0 Acc-2/F1 (segments with truth exactly 0 dropped, then > 0 vs > 0); F1 is sklearn's weighted F1.
`acc7_sdk` is a second 7-class accuracy with the CMU-MultimodalSDK README's bins (see `sdk_sentiment_class`).

Emotions (MOSEI, multi-label presence): per emotion accuracy, weighted accuracy (TP*N/P + TN) / 2N, F1 of the
positive class and weighted F1, plus their means. Single-label classes (MELD): accuracy, weighted F1, macro F1.

Every block carries its support (`n`, and `<name>_n_pos` / `<name>_n_neg` for binary views) so a reader can tell
a figure on 12 segments from one on 700. A metric that the data cannot define (one class in the truth, a constant
prediction or truth for a correlation, nothing to score) is `None` (JSON null, shown "n/a"), never NaN or 1.0.
With `resamples > 0` the headline metrics get `<metric>_ci`: a 95% percentile bootstrap interval over segments
(numpy `default_rng(seed)`, `resamples` resamples), computed from per-resample counts in one matrix product.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

NAN = float("nan")
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
MIN_CORR_PAIRS = 3  # a correlation of fewer pairs is n/a (two points always lie on a line)

Metric = float | None

# The metrics reports show and that get bootstrap intervals, per kind of task.
HEADLINE: dict[str, list[str]] = {
    "regression": ["has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc5", "acc7", "acc7_sdk", "mae", "corr"],
    "multilabel": ["acc_mean", "wacc_mean", "f1_mean", "wf1_mean"],
    "multiclass": ["acc", "wf1", "macro_f1"],
}


def _flat(a: np.ndarray | Sequence[float]) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def defined(v: Any) -> Metric:
    """A metric value as reported: a plain float, or None when it is missing, NaN or infinite."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def multiclass_acc(pred: np.ndarray, truth: np.ndarray) -> float:
    """MMSA's `__multiclass_acc`: fraction where np.round (half to even) of both agree."""
    return float(np.sum(np.round(pred) == np.round(truth)) / float(len(truth))) if len(truth) else NAN


def sdk_sentiment_class(x: np.ndarray) -> np.ndarray:
    """7 classes as the CMU-MultimodalSDK README bins them: exactly 0 is neutral, any positive value up to 1 is
    weakly positive (+1), (1, 2] positive (+2), (2, 3] strongly positive (+3), mirrored for negatives.

    So 0.3 -> +1 here, where MMSA's rounding gives 0."""
    x = np.clip(_flat(x), -3.0, 3.0)
    return np.where(x > 0, np.ceil(x), np.floor(x)).astype(np.int64)


# -- bootstrap ------------------------------------------------------------------------------------------------
def bootstrap_counts(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(resamples, n): how often each segment is drawn in each resample of `n` segments with replacement.

    Row r counts `default_rng(seed).integers(0, n, (resamples, n))[r]`, so any additive statistic of a resample
    is one product `counts @ per_segment_values`."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = (idx + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def percentile_ci(samples: np.ndarray, point: Metric) -> list[float] | None:
    """[2.5th, 97.5th] percentile of the finite resampled values; None when the point estimate is undefined."""
    finite = samples[np.isfinite(samples)]
    if point is None or not len(finite):
        return None
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return [float(lo), float(hi)]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), NAN)


def _binary_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    """acc, weighted accuracy, positive-class F1 and sklearn's weighted F1 from confusion counts (any shape).
    F1s and weighted accuracy are NaN where the truth has one class only; a 0/0 F1 counts 0 (zero_division=0)."""
    pos, neg = tp + fn, tn + fp
    n = pos + neg
    both = (pos > 0) & (neg > 0)
    f1_pos = np.nan_to_num(_ratio(2 * tp, 2 * tp + fp + fn))
    f1_neg = np.nan_to_num(_ratio(2 * tn, 2 * tn + fp + fn))
    return {
        "acc": _ratio(tp + tn, n),
        "wacc": np.where(both, (_ratio(tp, pos) + _ratio(tn, neg)) / 2, NAN),
        "f1": np.where(both, f1_pos, NAN),
        "wf1": np.where(both, _ratio(pos * f1_pos + neg * f1_neg, n), NAN),
    }


def _confusion(pred: np.ndarray, truth: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """(n, 4) per-segment indicators of tp, fp, fn, tn (rows outside `keep` are all zero)."""
    ind = np.stack([pred & truth, pred & ~truth, ~pred & truth, ~pred & ~truth], axis=1).astype(np.float64)
    return ind if keep is None else ind * keep[:, None]


# -- sentiment regression -------------------------------------------------------------------------------------
def sentiment_regression_metrics(
    pred: np.ndarray | Sequence[float], truth: np.ndarray | Sequence[float],
    resamples: int = 0, seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """MMSA's regression metrics (`__eval_mosei_regression`) plus `acc7_sdk` and `acc3`, with their support
    (`n`, `has0_n_pos/neg`, `non0_n`, `non0_n_pos/neg`) and, with `resamples`, `<headline>_ci`."""
    pred, truth = _flat(pred), _flat(truth)
    keep = np.isfinite(truth)
    pred, truth = pred[keep], truth[keep]
    n = len(truth)
    out: dict[str, Any] = {}
    nz = truth != 0
    h_t, h_p = truth >= 0, pred >= 0
    z_t, z_p = truth > 0, pred > 0
    support = {"has0_n_pos": int(h_t.sum()), "has0_n_neg": int((~h_t).sum()),
               "non0_n": int(nz.sum()), "non0_n_pos": int((z_t & nz).sum()), "non0_n_neg": int((~z_t & nz).sum())}
    if n == 0:
        out |= {k: None for k in ("has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc3", "acc5", "acc7", "acc7_sdk", "mae", "corr")}
        out["n"] = 0
        out |= support
        if resamples:
            out |= {f"{k}_ci": None for k in HEADLINE["regression"]}
        return out
    p7, t7 = np.clip(pred, -3.0, 3.0), np.clip(truth, -3.0, 3.0)
    p5, t5 = np.clip(pred, -2.0, 2.0), np.clip(truth, -2.0, 2.0)
    p3, t3 = np.clip(pred, -1.0, 1.0), np.clip(truth, -1.0, 1.0)
    if nz.any():
        out["non0_acc2"] = float(accuracy_score(z_t[nz], z_p[nz]))
        one_class = support["non0_n_pos"] == 0 or support["non0_n_neg"] == 0
        out["non0_f1"] = None if one_class else float(f1_score(z_t[nz], z_p[nz], average="weighted", zero_division=0))
    else:
        out["non0_acc2"] = out["non0_f1"] = None
    out["has0_acc2"] = float(accuracy_score(h_t, h_p))
    one_class = support["has0_n_pos"] == 0 or support["has0_n_neg"] == 0
    out["has0_f1"] = None if one_class else float(f1_score(h_t, h_p, average="weighted", zero_division=0))
    out["acc3"] = multiclass_acc(p3, t3)
    out["acc5"] = multiclass_acc(p5, t5)
    out["acc7"] = multiclass_acc(p7, t7)
    out["acc7_sdk"] = float(np.mean(sdk_sentiment_class(pred) == sdk_sentiment_class(truth)))
    out["mae"] = float(np.mean(np.abs(pred - truth)))
    # two pairs always correlate +-1: a figure, not a finding; below MIN_CORR_PAIRS it is n/a
    out["corr"] = float(np.corrcoef(pred, truth)[0, 1]) if n >= MIN_CORR_PAIRS and pred.std() > 0 and truth.std() > 0 else None
    out["n"] = int(n)
    out |= support
    if resamples:
        cols = {
            "ae": np.abs(pred - truth),
            "c5": np.round(p5) == np.round(t5), "c7": np.round(p7) == np.round(t7),
            "csdk": sdk_sentiment_class(pred) == sdk_sentiment_class(truth),
        }
        pc, tc = pred - pred.mean(), truth - truth.mean()  # centred once: the resampled sums stay well conditioned
        values = np.column_stack([*cols.values(), pc, tc, pc * pc, tc * tc, pc * tc,
                                  _confusion(h_p, h_t), _confusion(z_p, z_t, nz)])
        s = bootstrap_counts(n, resamples, seed) @ values  # (resamples, 15)
        mean = s[:, :4] / n
        mp, mt = s[:, 4] / n, s[:, 5] / n
        cov, vp, vt = s[:, 8] / n - mp * mt, s[:, 6] / n - mp * mp, s[:, 7] / n - mt * mt
        with np.errstate(invalid="ignore"):
            corr = np.where((vp > 1e-12) & (vt > 1e-12), cov / np.sqrt(np.maximum(vp * vt, 1e-300)), NAN)
        has0 = _binary_from_counts(*s[:, 9:13].T)
        non0 = _binary_from_counts(*s[:, 13:17].T)
        samples = {
            "mae": mean[:, 0], "acc5": mean[:, 1], "acc7": mean[:, 2], "acc7_sdk": mean[:, 3], "corr": corr,
            "has0_acc2": has0["acc"], "has0_f1": has0["wf1"], "non0_acc2": non0["acc"], "non0_f1": non0["wf1"],
        }
        out |= {f"{k}_ci": percentile_ci(samples[k], out[k]) for k in HEADLINE["regression"]}
    return out


# -- emotions: multi-label presence ---------------------------------------------------------------------------
def weighted_accuracy(pred: np.ndarray, truth: np.ndarray) -> Metric:
    """(TP * N/P + TN) / 2N = mean of the recalls of both classes (Tong et al.; common MOSEI practice).

    Undefined (None) unless the truth has both classes: one recall would be 0/0."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    p, n = int(truth.sum()), int((~truth).sum())
    tp, tn = int((pred & truth).sum()), int((~pred & ~truth).sum())
    return (tp * n / p + tn) / (2 * n) if p and n else None


def _mean_defined(values: Sequence[Metric]) -> Metric:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def emotion_presence_metrics(
    prob: np.ndarray, truth: np.ndarray, emotions: Sequence[str], threshold: float = 0.5,
    resamples: int = 0, seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Per emotion (presence = truth > 0, predicted = prob >= threshold): acc, wacc, f1 (positive class), wf1
    (sklearn weighted), `<emotion>_n_pos` / `_n_neg`, and the means over the emotions where each is defined.
    NaN truths (missing labels) are left out per emotion; wacc and the F1s are None for an emotion whose truth
    has one class only. `n` counts segments with every emotion labelled."""
    prob, truth = np.asarray(prob, np.float64).reshape(-1, len(emotions)), np.asarray(truth, np.float64).reshape(-1, len(emotions))
    out: dict[str, Any] = {}
    support: dict[str, int] = {}
    for j, name in enumerate(emotions):
        keep = np.isfinite(truth[:, j])
        t, p = truth[keep, j] > 0, prob[keep, j] >= threshold
        n_pos, n_neg = int(t.sum()), int((~t).sum())
        support[f"{name}_n_pos"], support[f"{name}_n_neg"] = n_pos, n_neg
        if not keep.any():
            out.update({f"{name}_acc": None, f"{name}_wacc": None, f"{name}_f1": None, f"{name}_wf1": None})
            continue
        both = n_pos > 0 and n_neg > 0
        out[f"{name}_acc"] = float(accuracy_score(t, p))
        out[f"{name}_wacc"] = weighted_accuracy(p, t)
        out[f"{name}_f1"] = float(f1_score(t, p, zero_division=0)) if both else None
        out[f"{name}_wf1"] = float(f1_score(t, p, average="weighted", zero_division=0)) if both else None
    for m in ("acc", "wacc", "f1", "wf1"):
        out[f"{m}_mean"] = _mean_defined([out[f"{e}_{m}"] for e in emotions])
    out["n"] = int(np.isfinite(truth).all(axis=1).sum())
    out |= support
    if resamples:
        n = len(truth)
        if n == 0:
            out |= {f"{k}_ci": None for k in HEADLINE["multilabel"]}
            return out
        keep = np.isfinite(truth)
        t, p = np.nan_to_num(truth) > 0, prob >= threshold
        values = np.concatenate([_confusion(p[:, j], t[:, j], keep[:, j]) for j in range(len(emotions))], axis=1)
        s = (bootstrap_counts(n, resamples, seed) @ values).reshape(resamples, len(emotions), 4)
        per = _binary_from_counts(*np.moveaxis(s, -1, 0))  # each (resamples, emotions)
        for m in ("acc", "wacc", "f1", "wf1"):
            point = [out[f"{e}_{m}"] is not None for e in emotions]  # the emotions the point estimate averages
            v = np.where(np.array(point)[None, :], per[m], NAN)
            with warnings.catch_warnings():  # a resample may leave an emotion with one class: all-NaN rows
                warnings.simplefilter("ignore", RuntimeWarning)
                samples = np.nanmean(v, axis=1)
            out[f"{m}_mean_ci"] = percentile_ci(samples, out[f"{m}_mean"])
    return out


# -- single-label classes -------------------------------------------------------------------------------------
def classification_metrics(
    pred: np.ndarray, truth: np.ndarray, classes: Sequence[str], resamples: int = 0, seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Single-label classes (MELD): accuracy, weighted F1 (the MELD leaderboard's figure), macro F1 over every
    class of the task, per-class F1 with its support `<class>_n`. `pred` and `truth` are class indices; truths < 0
    are missing labels and left out. A class absent from the truth has F1 None; with one class in the truth the
    weighted and macro F1 are None."""
    pred, truth = np.asarray(pred, np.int64).reshape(-1), np.asarray(truth, np.int64).reshape(-1)
    keep = truth >= 0
    pred, truth = pred[keep], truth[keep]
    k = len(classes)
    support = np.bincount(truth, minlength=k)[:k] if len(truth) else np.zeros(k, np.int64)
    counts = {f"{c}_n": int(s) for c, s in zip(classes, support, strict=True)}
    out: dict[str, Any] = {}
    if len(truth) == 0:
        out |= {"acc": None, "wf1": None, "macro_f1": None} | {f"{c}_f1": None for c in classes} | {"n": 0} | counts
        if resamples:
            out |= {f"{m}_ci": None for m in HEADLINE["multiclass"]}
        return out
    labels = list(range(k))
    several = int((support > 0).sum()) > 1
    out["acc"] = float(accuracy_score(truth, pred))
    out["wf1"] = float(f1_score(truth, pred, labels=labels, average="weighted", zero_division=0)) if several else None
    out["macro_f1"] = float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0)) if several else None
    per = f1_score(truth, pred, labels=labels, average=None, zero_division=0)
    out.update({f"{c}_f1": float(v) if s > 0 else None for c, v, s in zip(classes, per, support, strict=True)})
    out["n"] = int(len(truth))
    out |= counts
    if resamples:
        n = len(truth)
        onehot_t = np.eye(k)[truth]
        onehot_p = np.eye(k)[np.clip(pred, 0, k - 1)]
        values = np.concatenate([onehot_t * onehot_p, onehot_t, onehot_p], axis=1)  # tp, support, predicted per class
        s = bootstrap_counts(n, resamples, seed) @ values
        tp, sup, prd = s[:, :k], s[:, k : 2 * k], s[:, 2 * k :]
        f1 = np.nan_to_num(_ratio(2 * tp, sup + prd))
        many = (sup > 0).sum(axis=1) > 1
        samples = {
            "acc": tp.sum(axis=1) / n,
            "wf1": np.where(many, (sup * f1).sum(axis=1) / n, NAN),
            "macro_f1": np.where(many, f1.mean(axis=1), NAN),
        }
        out |= {f"{m}_ci": percentile_ci(samples[m], out[m]) for m in HEADLINE["multiclass"]}
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
