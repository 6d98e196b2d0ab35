"""Metrics of one sigmoid per finding (a multi-label set), as pure functions of numpy arrays.

Labels are [N, findings] of 1, 0 or -1; -1 (an ignored uncertain label, CheXpert's U-Ignore)
is left out of every number for that finding.  Per finding: ROC AUC and average precision
(None when the finding has one class only among the scored films).  Over findings: macro AUC
(the mean of the defined per-finding AUCs, the number papers report) and micro AUC (every
scored label pooled).  Confidence intervals resample PATIENTS, as the binary report does.
"""
import numpy as np
from sklearn import metrics as skm

from cxr_fast.tasks import binary_metrics

# CheXNet (Rajpurkar et al. 2017, arXiv:1711.05225v3, Table 2): DenseNet-121 from ImageNet weights
# at 224 px on its own patient split of ChestX-ray14; an anchor for per-finding AUCs, not a like-for-like
# run (typed from the paper; no internet here to re-check the PDF).
CHEXNET_AUC = {"Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345,
               "Mass": 0.8676, "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887,
               "Consolidation": 0.7901, "Edema": 0.8878, "Emphysema": 0.9371, "Fibrosis": 0.8047,
               "Pleural_Thickening": 0.8062, "Hernia": 0.9164}


def _both(labels):
    return labels.size > 0 and labels.min() == 0 and labels.max() == 1


def masked_cross_entropy(labels, probs):
    """Mean binary cross-entropy over the labels that are not ignored."""
    keep = labels >= 0
    p = np.clip(probs[keep], binary_metrics.EPSILON, 1 - binary_metrics.EPSILON)
    y = labels[keep]
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if y.size else None


def choose_thresholds(labels, probs, target_recall=None):
    """One threshold per finding, chosen on validation predictions as `binary_metrics.choose_threshold`
    does for a binary set (ignored labels left out); 0.5 for a finding without both classes."""
    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    chosen = []
    for k in range(labels.shape[1]):
        keep = labels[:, k] >= 0
        y = labels[keep, k].astype(int)
        chosen.append(binary_metrics.choose_threshold(y, probs[keep, k], target_recall) if _both(y) else 0.5)
    return chosen


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else None


def scores(labels, probs, names, threshold=0.5):
    """Loss, accuracy, macro / micro AUC, macro AP, micro precision / recall, and per finding AUC,
    AP, and precision / recall at its threshold (`threshold`: one number, or one per finding)."""
    labels = np.asarray(labels, np.float64).reshape(len(labels), len(names))
    probs = np.asarray(probs, np.float64).reshape(labels.shape)
    if labels.size == 0:
        raise ValueError("no predictions to score")
    thresholds = np.broadcast_to(np.asarray(threshold, np.float64), [len(names)])
    keep = labels >= 0
    predicted = probs >= thresholds
    per_finding = {}
    for k, name in enumerate(names):
        y, p = labels[keep[:, k], k].astype(int), probs[keep[:, k], k]
        called = predicted[keep[:, k], k]
        both = _both(y)
        per_finding[name] = {"auc": float(skm.roc_auc_score(y, p)) if both else None,
                             "average_precision": float(skm.average_precision_score(y, p)) if both else None,
                             "count": int(y.size), "positives": int(y.sum()), "threshold": float(thresholds[k]),
                             "precision": _ratio(int(np.sum(called & (y == 1))), int(called.sum())),
                             "recall": _ratio(int(np.sum(called & (y == 1))), int(y.sum()))}
    defined = [v["auc"] for v in per_finding.values() if v["auc"] is not None]
    precisions = [v["average_precision"] for v in per_finding.values() if v["average_precision"] is not None]
    pooled_y, pooled_p = labels[keep].astype(int), probs[keep]
    tp = int(np.sum(predicted[keep] & (pooled_y == 1)))
    positives, called = int(pooled_y.sum()), int(predicted[keep].sum())
    precision, recall = tp / called if called else None, tp / positives if positives else None
    return {
        "loss": masked_cross_entropy(labels, probs),
        "accuracy": float(np.mean(predicted[keep] == (pooled_y == 1))) if pooled_y.size else None,
        "auc": float(np.mean(defined)) if defined else None,  # macro: what papers report
        "micro_auc": float(skm.roc_auc_score(pooled_y, pooled_p)) if _both(pooled_y) else None,
        "average_precision": float(np.mean(precisions)) if precisions else None,
        "precision": precision,  # micro: every scored label pooled
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision and recall else None,
        "threshold": np.asarray(threshold, np.float64).tolist(),  # a number, or one per finding
        "count": int(len(labels)),
        "labels_scored": int(pooled_y.size),
        "per_finding": per_finding,
    }


def bootstrap(labels, probs, patients, names, samples=1000, seed=0, level=0.95):
    """Percentile CIs of macro and micro AUC and of each finding's AUC and AP, resampling patients."""
    labels, probs = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    _, inverse = np.unique(np.asarray(patients), return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(inverse.max() + 1)]
    rng = np.random.default_rng(seed)
    draws = {}
    for _ in range(samples):
        chosen = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        result = scores(labels[chosen], probs[chosen], names)
        values = {"auc": result["auc"], "micro_auc": result["micro_auc"]}
        for name, finding in result["per_finding"].items():
            values.update({f"{name}/auc": finding["auc"], f"{name}/average_precision": finding["average_precision"]})
        for key, value in values.items():
            if value is not None:
                draws.setdefault(key, []).append(value)
    tail = 100 * (1 - level) / 2
    return {key: {"low": float(np.percentile(v, tail)), "high": float(np.percentile(v, 100 - tail)),
                  "samples": len(v)} for key, v in draws.items()}


def evaluate(labels, probs, patients, names, threshold=0.5, bootstrap_samples=1000, seed=0, anchors=None):
    """Everything a multi-label metrics.json holds: scores, patient-bootstrap CIs, published anchors."""
    result = scores(labels, probs, names, threshold)
    intervals = bootstrap(labels, probs, patients, names, bootstrap_samples, seed) if bootstrap_samples else {}
    result["confidence_intervals"] = {k: v for k, v in intervals.items() if "/" not in k} or None
    for name, finding in result["per_finding"].items():
        finding["auc_ci"] = intervals.get(f"{name}/auc")
        finding["average_precision_ci"] = intervals.get(f"{name}/average_precision")
        if anchors and name in anchors:
            finding["published_auc"] = anchors[name]
    result["patients"] = int(len(set(patients)))
    return result
