"""Metrics of a binary output (one sigmoid), as pure functions of (labels, probabilities[,
patients]): numpy and scikit-learn only.

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


def choose_threshold(labels, probs, target_recall=None):
    """A decision threshold chosen on validation predictions.

    Youden's J (max sensitivity + specificity - 1) by default; with `target_recall`, the highest
    threshold whose recall (sensitivity) reaches it, for screening settings where a missed
    pneumonia costs more than a false alarm.
    """
    labels = np.asarray(labels).astype(int).ravel()
    probs = np.asarray(probs, np.float64).ravel()
    if len(np.unique(labels)) < 2:
        raise ValueError("choosing a threshold needs both classes in the validation split")
    fpr, tpr, thresholds = skm.roc_curve(labels, probs, drop_intermediate=False)
    # sklearn's first threshold is +inf ("predict nothing positive"): never a useful choice.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], np.clip(thresholds[1:], 0.0, 1.0)
    if target_recall is None:
        return float(thresholds[int(np.argmax(tpr - fpr))])
    reaching = np.flatnonzero(tpr >= target_recall)
    return float(thresholds[reaching[0]])


def calibration(labels, probs, bins=10):
    """Expected calibration error and the reliability curve over equal-width probability bins."""
    labels = np.asarray(labels, np.float64).ravel()
    probs = np.asarray(probs, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    curve, ece = [], 0.0
    for b in range(bins):
        members = index == b
        if not members.any():
            continue
        confidence, frequency = float(probs[members].mean()), float(labels[members].mean())
        ece += members.mean() * abs(confidence - frequency)
        curve.append({"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]), "mean_probability": confidence,
                      "observed_frequency": frequency, "count": int(members.sum())})
    return {"expected_calibration_error": float(ece), "bins": bins, "curve": curve}


def per_patient(labels, probs, patients):
    """Patient-level labels and scores: a patient is positive if any film is; the score is the max."""
    by_patient = {}
    for label, prob, patient in zip(np.asarray(labels).ravel(), np.asarray(probs).ravel(), patients):
        old = by_patient.get(patient, (0, 0.0))
        by_patient[patient] = (max(old[0], int(label)), max(old[1], float(prob)))
    names = sorted(by_patient)
    return np.array([by_patient[p][0] for p in names]), np.array([by_patient[p][1] for p in names])


SCALARS = ("loss", "accuracy", "auc", "average_precision", "precision", "recall", "specificity", "f1")


def bootstrap(labels, probs, patients, threshold=0.5, samples=1000, seed=0, level=0.95):
    """Percentile confidence intervals of every scalar metric, resampling PATIENTS with replacement.

    Films of one child are correlated; resampling films would understate the uncertainty.
    """
    labels = np.asarray(labels).astype(int).ravel()
    probs = np.asarray(probs, np.float64).ravel()
    patients = np.asarray(patients)
    names, inverse = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(names))]
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in SCALARS}
    for _ in range(samples):
        chosen = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        result = binary_metrics(labels[chosen], probs[chosen], threshold)
        for name in SCALARS:
            if result[name] is not None:
                draws[name].append(result[name])
    tail = 100 * (1 - level) / 2
    return {name: ({"low": float(np.percentile(v, tail)), "high": float(np.percentile(v, 100 - tail)),
                    "samples": len(v)} if v else None) for name, v in draws.items()}


def evaluate(labels, probs, patients, threshold=0.5, bootstrap_samples=1000, seed=0):
    """Everything metrics.json holds: image-level metrics with patient-bootstrap CIs, calibration,
    and patient-level metrics."""
    result = binary_metrics(labels, probs, threshold)
    result["confidence_intervals"] = bootstrap(labels, probs, patients, threshold, bootstrap_samples, seed) \
        if bootstrap_samples else None
    result["calibration"] = calibration(labels, probs)
    patient_labels, patient_probs = per_patient(labels, probs, patients)
    result["per_patient"] = binary_metrics(patient_labels, patient_probs, threshold)
    result["patients"] = int(len(patient_labels))
    return result
