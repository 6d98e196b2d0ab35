"""Metrics as pure functions of (labels, probabilities[, patients]): numpy and scikit-learn only.

One implementation serves validation during training, the final test score and the evaluation
report, so the numbers in history.json, metrics.json and report.md always agree.
"""
import numpy as np
from sklearn import metrics as skm

EPSILON = 1e-7  # Keras' clipping of probabilities in binary cross-entropy


def binary_cross_entropy(labels, probs):
    probs = np.clip(np.asarray(probs, np.float64), EPSILON, 1 - EPSILON)
    labels = np.asarray(labels, np.float64)
    return float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)))


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else None


def binary_metrics(labels, probs, threshold=0.5):
    """Loss, accuracy, ROC AUC, average precision, precision, recall, specificity, F1, confusion matrix.

    Undefined values (AUC with one class present, precision with no positive prediction) are
    None rather than a misleading 0; the report prints them as "n/a".
    """
    labels = np.asarray(labels).astype(int).ravel()
    probs = np.asarray(probs, np.float64).ravel()
    if labels.size == 0:
        raise ValueError("no predictions to score")
    predicted = (probs >= threshold).astype(int)
    tp = int(np.sum((predicted == 1) & (labels == 1)))
    tn = int(np.sum((predicted == 0) & (labels == 0)))
    fp = int(np.sum((predicted == 1) & (labels == 0)))
    fn = int(np.sum((predicted == 0) & (labels == 1)))
    both = len(np.unique(labels)) == 2
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (
        0.0 if precision is not None and recall is not None else None)
    return {
        "loss": binary_cross_entropy(labels, probs),
        "accuracy": float(np.mean(predicted == labels)),
        "auc": float(skm.roc_auc_score(labels, probs)) if both else None,
        "average_precision": float(skm.average_precision_score(labels, probs)) if both else None,
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": f1,
        "threshold": float(threshold),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "count": int(labels.size),
        "positives": int(np.sum(labels == 1)),
    }
