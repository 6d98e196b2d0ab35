"""Per-finding metrics against values worked out by hand: ignored labels left out, thresholds per finding."""
import numpy as np

from cxr_fast.tasks import finding_metrics


def test_multilabel_scores_leave_ignored_labels_out_and_bootstrap_patients():
    labels = np.array([[1, 0], [0, -1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.1, 0.99], [0.8, 0.7], [0.3, 0.1]])
    result = finding_metrics.scores(labels, probs, ("a", "b"))
    assert result["per_finding"]["a"]["auc"] == 1.0 and result["per_finding"]["b"]["count"] == 3
    assert result["per_finding"]["b"]["auc"] == 1.0  # the ignored 0.99 would have made it 0.5
    assert result["auc"] == 1.0 and result["labels_scored"] == 7
    full = finding_metrics.evaluate(labels, probs, ["p1", "p1", "p2", "p3"], ("a", "b"), bootstrap_samples=50)
    assert full["patients"] == 3 and full["per_finding"]["a"]["auc_ci"]["samples"] > 0


def test_thresholds_per_finding_are_chosen_on_val_without_ignored_labels():
    labels = np.array([[1, 0], [0, -1], [1, 1], [0, 0], [1, 1]])
    probs = np.array([[0.6, 0.2], [0.1, 0.99], [0.7, 0.4], [0.3, 0.1], [0.65, 0.35]])
    chosen = finding_metrics.choose_thresholds(labels, probs)
    assert chosen == [0.6, 0.35]  # each finding's own Youden point; the ignored 0.99 plays no part
    assert finding_metrics.choose_thresholds(np.array([[1], [1]]), np.array([[0.2], [0.9]])) == [0.5]  # one class: 0.5
    result = finding_metrics.scores(labels, probs, ("a", "b"), chosen)
    assert result["threshold"] == [0.6, 0.35]
    a, b = result["per_finding"]["a"], result["per_finding"]["b"]
    assert (a["threshold"], a["precision"], a["recall"]) == (0.6, 1.0, 1.0)
    assert (b["threshold"], b["precision"], b["recall"]) == (0.35, 1.0, 1.0)
    at_half = finding_metrics.scores(labels, probs, ("a", "b"))["per_finding"]["b"]  # one number for all: 0.5
    assert at_half["threshold"] == 0.5 and at_half["recall"] == 0.0 and at_half["precision"] is None
