"""Metrics against values computed by hand on tiny fixed sets."""
import math

import numpy as np
import pytest

from cxr_fast.tasks import binary_metrics

LABELS = [0, 0, 1, 1, 1, 0]
PROBS = [0.1, 0.6, 0.8, 0.4, 0.9, 0.2]


def test_binary_metrics_by_hand():
    m = binary_metrics.binary_metrics(LABELS, PROBS, threshold=0.5)
    # predicted 0 1 1 0 1 0 -> tp 2 (0.8, 0.9), fp 1 (0.6), fn 1 (0.4), tn 2 (0.1, 0.2)
    assert m["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    # AUC: positive/negative pairs ranked right: 0.8 > all 3 negs; 0.4 > 0.1, 0.2; 0.9 > all -> 8/9
    assert m["auc"] == pytest.approx(8 / 9)
    expected_loss = -np.mean([math.log(0.9), math.log(0.4), math.log(0.8), math.log(0.4), math.log(0.9),
                              math.log(0.8)])
    assert m["loss"] == pytest.approx(expected_loss)
    assert m["count"] == 6 and m["positives"] == 3


def test_degenerate_single_class():
    m = binary_metrics.binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert m["auc"] is None and m["average_precision"] is None
    assert m["specificity"] is None and m["recall"] == pytest.approx(2 / 3) and m["precision"] == 1.0
    none_predicted = binary_metrics.binary_metrics([0, 0], [0.1, 0.2])
    assert none_predicted["precision"] is None and none_predicted["f1"] is None and none_predicted["accuracy"] == 1.0


def test_thresholds():
    labels, probs = [0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.5, 0.6, 0.8, 0.9]
    assert binary_metrics.choose_threshold(labels, probs) == pytest.approx(0.6)  # J = 1 - 0 at 0.6
    assert binary_metrics.choose_threshold(labels, probs, target_recall=0.6) == pytest.approx(0.8)  # recall 2/3
    assert binary_metrics.choose_threshold(LABELS, PROBS, target_recall=1.0) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics.choose_threshold([1, 1], [0.2, 0.3])


def test_calibration_by_hand():
    c = binary_metrics.calibration([0, 1, 1, 1], [0.05, 0.15, 0.95, 0.85], bins=2)
    # bin [0, .5): probs .05 .15 mean .1, freq .5; bin [.5, 1]: mean .9, freq 1 -> ECE .5*.4 + .5*.1
    assert c["expected_calibration_error"] == pytest.approx(0.25)
    assert [b["count"] for b in c["curve"]] == [2, 2]


def test_per_patient_any_positive_and_max_score():
    labels, probs = binary_metrics.per_patient([0, 1, 0, 0], [0.3, 0.6, 0.9, 0.1], ["a", "a", "b", "c"])
    assert labels.tolist() == [1, 0, 0] and probs.tolist() == [0.6, 0.9, 0.1]


def test_bootstrap_resamples_patients():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 5)  # 5 films per patient
    labels = np.repeat(rng.integers(0, 2, 40), 5)
    probs = np.clip(labels * 0.4 + np.repeat(rng.uniform(0, 0.6, 40), 5) + rng.uniform(0, 0.02, 200), 0, 1)
    ci = binary_metrics.bootstrap(labels, probs, patients, samples=200, seed=1)
    point = binary_metrics.binary_metrics(labels, probs)
    for name in ("accuracy", "auc", "recall"):
        assert ci[name]["low"] <= point[name] <= ci[name]["high"]
    by_image = binary_metrics.bootstrap(labels, probs, np.arange(200), samples=200, seed=1)
    width = lambda c: c["accuracy"]["high"] - c["accuracy"]["low"]  # noqa: E731
    assert width(ci) > width(by_image)  # correlated films: patients give the honest, wider interval


def test_evaluate_bundles_everything():
    result = binary_metrics.evaluate(LABELS, PROBS, ["a", "a", "b", "c", "d", "e"], bootstrap_samples=50)
    assert result["patients"] == 5 and "expected_calibration_error" in result["calibration"]
    assert set(result["confidence_intervals"]) == set(binary_metrics.SCALARS)
