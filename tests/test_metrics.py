"""Metrics against values worked out by hand (see the comments), including truths at exactly 0 and predictions
on .5 rounding boundaries."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr

from mmolre.evaluation import results_json
from mmolre.metrics import (
    HEADLINE,
    classification_metrics,
    emotion_presence_metrics,
    lower_is_better,
    multiclass_acc,
    sdk_sentiment_class,
    sentiment_regression_metrics,
    weighted_accuracy,
)
from tests.store_fixtures import DATA

TRUTH = [0.0, 0.0, 1.4, -2.6, 3.0, -0.3]
PRED = [0.5, -0.2, 1.5, -2.5, 3.6, 0.2]


def test_sentiment_regression_by_hand() -> None:
    m = sentiment_regression_metrics(PRED, TRUTH)
    # MAE: (.5 + .2 + .1 + .1 + .6 + .5) / 6
    assert m["mae"] == pytest.approx(2.0 / 6)
    # Acc-7: clipped pred rounds half-even to [0, -0, 2, -2, 3, 0], truth to [0, 0, 1, -3, 3, -0]
    assert m["acc7"] == pytest.approx(4 / 6)
    # Acc-5: clip to [-2, 2] first: pred [0, -0, 2, -2, 2, 0], truth [0, 0, 1, -2, 2, -0]
    assert m["acc5"] == pytest.approx(5 / 6)
    # SDK bins: pred [1, -1, 2, -3, 3, 1], truth [0, 0, 2, -3, 3, -1]
    assert m["acc7_sdk"] == pytest.approx(3 / 6)
    # Has0: truth >= 0 [T T T F T F], pred >= 0 [T F T F T T]
    assert m["has0_acc2"] == pytest.approx(4 / 6)
    # class T (4): P = R = 3/4 -> F1 .75; class F (2): P = R = 1/2 -> F1 .5; weighted (4 * .75 + 2 * .5) / 6
    assert m["has0_f1"] == pytest.approx(4 / 6)
    # Non0 drops the two zero truths: truth > 0 [T F T F], pred > 0 [T F T T]
    assert m["non0_acc2"] == pytest.approx(3 / 4)
    # class T: P 2/3, R 1 -> .8; class F: P 1, R 1/2 -> 2/3; weighted (2 * .8 + 2 * 2/3) / 4
    assert m["non0_f1"] == pytest.approx((1.6 + 4 / 3) / 4)
    assert m["corr"] == pytest.approx(pearsonr(PRED, TRUTH)[0])
    assert m["n"] == 6


def test_zero_prediction_and_zero_truth_conventions() -> None:
    # truth -1, pred exactly 0: Has0 calls the prediction non-negative (wrong), Non0 calls it not positive (right)
    m = sentiment_regression_metrics([0.0, 1.0], [-1.0, 2.0])
    assert m["has0_acc2"] == 0.5
    assert m["non0_acc2"] == 1.0
    # all truths zero: Non0 has nothing to score
    m = sentiment_regression_metrics([0.3, -0.3], [0.0, 0.0])
    assert m["non0_acc2"] is None and m["non0_f1"] is None and m["non0_n"] == 0
    assert m["corr"] is None  # constant truth


def test_rounding_is_half_to_even_after_clipping() -> None:
    assert multiclass_acc(np.array([0.5, 1.5, 2.5, -0.5, -1.5]), np.array([0.0, 2.0, 2.0, 0.0, -2.0])) == 1.0
    # 3.5 clipped to 3 before rounding; unclipped it would round to 4
    assert sentiment_regression_metrics([3.5], [3.0])["acc7"] == 1.0
    assert sentiment_regression_metrics([2.5], [2.0])["acc5"] == 1.0


def test_sdk_bins() -> None:
    x = np.array([-3.2, -2.0, -1.01, -0.3, 0.0, 0.3, 1.0, 1.01, 2.9])
    assert sdk_sentiment_class(x).tolist() == [-3, -2, -2, -1, 0, 1, 1, 2, 3]


def test_missing_truths_are_left_out() -> None:
    m = sentiment_regression_metrics([1.0, 2.0, 0.5], [1.0, float("nan"), -1.0])
    assert m["n"] == 2 and m["mae"] == pytest.approx((0 + 1.5) / 2)


def test_emotion_presence_by_hand() -> None:
    truth = np.zeros((5, 2))
    truth[0, 0] = 1.0  # happy present once
    truth[:, 1] = [1, 1, 0, 0, float("nan")]  # sad: last label missing
    prob = np.array([[0.9, 0.5], [0.6, 0.2], [0.1, 0.4], [0.2, 0.7], [0.3, 0.9]])
    m = emotion_presence_metrics(prob, truth, ["happy", "sad"])
    # happy: pred [1 1 0 0 0], TP 1 FP 1 TN 3 FN 0, P 1 N 4
    assert m["happy_acc"] == pytest.approx(4 / 5)
    assert m["happy_wacc"] == pytest.approx((1 * 4 / 1 + 3) / (2 * 4))
    assert m["happy_f1"] == pytest.approx(2 / 3)
    # weighted F1: class 1 (support 1) 2/3; class 0 (support 4) P 1 R 3/4 -> 6/7
    assert m["happy_wf1"] == pytest.approx((2 / 3 + 4 * 6 / 7) / 5)
    # sad (4 labelled): prob .5 counts as present -> pred [1 0 0 1], truth [1 1 0 0]: TP 1 FN 1 FP 1 TN 1
    assert m["sad_acc"] == pytest.approx(0.5)
    assert m["sad_wacc"] == pytest.approx(0.5)
    assert m["sad_f1"] == pytest.approx(0.5)
    assert m["wacc_mean"] == pytest.approx((0.875 + 0.5) / 2)


def test_weighted_accuracy_single_class_is_undefined() -> None:
    # one recall would be 0/0: reporting the other alone would pass a half-defined figure off as the mean
    assert weighted_accuracy(np.array([0, 0, 1]), np.array([0, 0, 0])) is None
    assert weighted_accuracy(np.array([1, 0]), np.array([1, 1])) is None


def test_classification_by_hand() -> None:
    m = classification_metrics([0, 2, 2, 2, 1, 0], [0, 1, 2, 2, 1, -1], ["negative", "neutral", "positive"])
    assert m["n"] == 5 and m["acc"] == pytest.approx(0.8)
    # per class F1: negative 1, neutral (P 1, R 1/2) 2/3, positive (P 2/3, R 1) .8; supports 1, 2, 2
    assert m["neutral_f1"] == pytest.approx(2 / 3)
    assert m["wf1"] == pytest.approx((1 + 2 * 2 / 3 + 2 * 0.8) / 5)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0.8) / 3)


def test_direction_of_selection_metrics() -> None:
    assert lower_is_better("loss") and lower_is_better("sentiment/mae")
    assert not lower_is_better("emotion/wf1") and not lower_is_better("sentiment/corr")
    assert not lower_is_better("sentiment/wf1, emotion/wf1") and lower_is_better("sentiment/mae,emotion/loss")
    with pytest.raises(ValueError, match="mixes metrics"):
        lower_is_better("sentiment/mae,sentiment/corr")


# -- support, undefined metrics, bootstrap intervals ----------------------------------------------------------
def test_constant_prediction_has_no_correlation_and_json_says_null() -> None:
    m = sentiment_regression_metrics([0.5] * 4, [1.0, -1.0, 2.0, 0.0])
    assert m["corr"] is None and m["mae"] == pytest.approx((0.5 + 1.5 + 1.5 + 0.5) / 4)
    m = sentiment_regression_metrics([0.5] * 4, [1.0, -1.0, 2.0, 0.0], resamples=200)
    assert m["corr_ci"] is None and m["mae_ci"] is not None
    doc = json.loads(results_json({"test": {"sentiment": m}}))
    assert doc["test"]["sentiment"]["corr"] is None
    with pytest.raises(ValueError):  # NaN can never reach results.json
        json.dumps({"corr": float("nan")}, allow_nan=False)
    assert results_json({"corr": float("nan"), "inf": float("inf")}) == '{\n  "corr": null,\n  "inf": null\n}'


def test_one_class_in_the_truth_leaves_f1_undefined_not_one() -> None:
    # every truth positive and every prediction right: accuracy 1 is true, but F1 over "both classes" is not 1
    m = sentiment_regression_metrics([1.0, 2.0, 0.5], [1.2, 2.2, 0.4], resamples=100)
    assert m["has0_acc2"] == 1.0 and m["non0_acc2"] == 1.0
    assert m["has0_f1"] is None and m["non0_f1"] is None and m["has0_f1_ci"] is None
    assert (m["has0_n_pos"], m["has0_n_neg"], m["non0_n"], m["non0_n_pos"], m["non0_n_neg"]) == (3, 0, 3, 3, 0)
    # an emotion never present in the split: no F1, no weighted accuracy; its counts say why
    truth = np.array([[0, 1], [0, 0], [0, 1.0]])
    e = emotion_presence_metrics(np.array([[0.1, 0.9], [0.2, 0.1], [0.7, 0.8]]), truth, ["fear", "sad"], resamples=100)
    assert (e["fear_n_pos"], e["fear_n_neg"], e["sad_n_pos"], e["sad_n_neg"]) == (0, 3, 2, 1)
    assert e["fear_f1"] is None and e["fear_wacc"] is None and e["fear_wf1"] is None and e["fear_acc"] == pytest.approx(2 / 3)
    assert e["f1_mean"] == e["sad_f1"] == 1.0  # the mean is over the emotions where F1 is defined
    assert e["n"] == 3
    # single-label classes: one class in the truth, and a class absent from it
    c = classification_metrics([0, 1, 0], [0, 0, 0], ["neg", "neu", "pos"], resamples=100)
    assert c["wf1"] is None and c["macro_f1"] is None and c["wf1_ci"] is None and c["acc"] == pytest.approx(2 / 3)
    assert (c["neg_n"], c["neu_n"], c["pos_n"]) == (3, 0, 0) and c["neu_f1"] is None and c["neg_f1"] == pytest.approx(0.8)


def test_empty_split_is_all_undefined() -> None:
    m = sentiment_regression_metrics([], [], resamples=50)
    assert m["n"] == 0 and all(m[k] is None and m[f"{k}_ci"] is None for k in HEADLINE["regression"])
    c = classification_metrics([], [], ["a", "b"], resamples=50)
    assert c["n"] == 0 and c["acc"] is None and c["a_n"] == 0


def test_bootstrap_intervals_are_the_resampled_metrics() -> None:
    """The vectorised intervals equal the metric functions applied to each resample of default_rng(0)."""
    rng = np.random.default_rng(3)
    n, b = 50, 60
    truth = np.round(rng.normal(size=n) * 4) / 3
    pred = 0.5 * truth + rng.normal(size=n)
    idx = np.random.default_rng(0).integers(0, n, size=(b, n))
    m = sentiment_regression_metrics(pred, truth, resamples=b)
    per = [sentiment_regression_metrics(pred[i], truth[i]) for i in idx]
    for k in HEADLINE["regression"]:
        vals = np.array([r[k] for r in per], dtype=float)
        assert m[f"{k}_ci"] == pytest.approx(list(np.percentile(vals[np.isfinite(vals)], [2.5, 97.5])), abs=1e-9), k
    labels = (rng.random((n, 3)) < [0.5, 0.2, 0.05]).astype(float)
    labels[4, 1] = np.nan
    prob = np.clip(0.4 * labels + rng.random((n, 3)) * 0.7, 0, 1)
    e = emotion_presence_metrics(prob, labels, ["a", "b", "c"], resamples=b)
    per_e = [emotion_presence_metrics(prob[i], labels[i], ["a", "b", "c"]) for i in idx]
    for k in HEADLINE["multilabel"]:
        vals = np.array([r[k] for r in per_e], dtype=float)
        assert e[f"{k}_ci"] == pytest.approx(list(np.percentile(vals, [2.5, 97.5])), abs=1e-9), k
    cls_t = rng.integers(0, 3, n)
    cls_p = np.where(rng.random(n) < 0.6, cls_t, rng.integers(0, 3, n))
    c = classification_metrics(cls_p, cls_t, ["x", "y", "z"], resamples=b)
    per_c = [classification_metrics(cls_p[i], cls_t[i], ["x", "y", "z"]) for i in idx]
    for k in HEADLINE["multiclass"]:
        vals = np.array([r[k] for r in per_c], dtype=float)
        assert c[f"{k}_ci"] == pytest.approx(list(np.percentile(vals, [2.5, 97.5])), abs=1e-9), k


def _mosi_ridge_predictions() -> tuple[np.ndarray, np.ndarray]:
    """Real predictions on real labels: ridge on the ACL 2017 release's MOSI text features, scored on that
    release's own 752-segment test split (continuous labels from label.csv)."""
    import pandas as pd
    from sklearn.linear_model import Ridge

    root = Path(os.environ.get("MMOLRE_DATA", DATA)) / "mosi"  # MMOLRE_DATA: the shared data seen from a worktree
    if not (root / "utterance" / "text_train.csv").is_file():
        pytest.skip(f"{root}/utterance not found")
    ids = pd.read_csv(root / "utterance" / "transcripts.csv", header=None)[0]
    labels = pd.read_csv(root / "label.csv").set_index("id")["label"]

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        t = pd.read_csv(root / "utterance" / f"text_{name}.csv", header=None).to_numpy()
        y = labels.reindex(ids.iloc[t[:, 0].astype(int)]).to_numpy(dtype=float)
        keep = np.isfinite(y)
        return t[keep, 1:], y[keep]

    xtr, ytr = split("train")
    xte, yte = split("test")
    return Ridge(alpha=10.0).fit(xtr, ytr).predict(xte), yte


def test_intervals_contain_the_estimate_on_real_mosi_predictions() -> None:
    pred, truth = _mosi_ridge_predictions()
    m = sentiment_regression_metrics(pred, truth, resamples=1000)
    assert m["n"] == len(truth) > 700
    assert m["non0_n"] == m["non0_n_pos"] + m["non0_n_neg"] and m["has0_n_pos"] + m["has0_n_neg"] == m["n"]
    for k in HEADLINE["regression"]:
        low, high = m[f"{k}_ci"]
        assert low <= m[k] <= high and high - low < 0.2, (k, m[k], low, high)
    assert 0.4 < m["corr"] < 0.8 and 0.7 < m["non0_acc2"] < 0.85  # the README's measured floor: Corr ~0.6, Non0 ~77%
    # the same seed gives the same interval
    assert sentiment_regression_metrics(pred, truth, resamples=1000)["mae_ci"] == m["mae_ci"]


def test_no_nan_reaches_results_json(tmp_path: Path) -> None:
    doc = {"valid": {"sentiment": sentiment_regression_metrics([0.1, 0.1], [0.0, 0.0], resamples=20)}, "best_value": math.inf}
    text = results_json(doc)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["best_value"] is None
