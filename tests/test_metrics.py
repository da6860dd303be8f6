"""Metrics against values worked out by hand (see the comments), including truths at exactly 0 and predictions
on .5 rounding boundaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr

from mmolre.metrics import (
    classification_metrics,
    emotion_presence_metrics,
    lower_is_better,
    multiclass_acc,
    sdk_sentiment_class,
    sentiment_regression_metrics,
    weighted_accuracy,
)

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
    assert math.isnan(m["non0_acc2"]) and math.isnan(m["non0_f1"])
    assert math.isnan(m["corr"])  # constant truth


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


def test_weighted_accuracy_single_class() -> None:
    assert weighted_accuracy(np.array([0, 0, 1]), np.array([0, 0, 0])) == pytest.approx(2 / 3)
    assert weighted_accuracy(np.array([1, 0]), np.array([1, 1])) == pytest.approx(0.5)


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
