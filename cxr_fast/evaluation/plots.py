"""The evaluation figures, drawn with matplotlib's headless Agg backend and written atomically.

Each function takes plain values (numpy arrays, the dicts of `cxr_fast.tasks`' metric modules,
the training history) and a path, and returns the path; nothing here computes a metric.
"""
import io
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from cxr_fast import atomic  # noqa: E402

CLASSES = ("NORMAL", "PNEUMONIA")


def _save(figure, path):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def confusion_matrix(confusion, path, threshold):
    counts = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    figure.subplots_adjust(wspace=0.55)
    for ax, values, title, fmt in ((axes[0], counts, "Counts", "{:d}"), (axes[1], rates, "Rates (per true class)",
                                                                         "{:.1%}")):
        ax.imshow(values if values is rates else rates, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=13,
                    color="white" if rates[i, j] > 0.5 else "black")
        ax.set_xticks([0, 1], [f"pred. {c}" for c in CLASSES])
        ax.set_yticks([0, 1], [f"true {c}" for c in CLASSES])
        ax.set_title(title)
    figure.suptitle(f"Confusion matrix at threshold {threshold:.3f}")
    return _save(figure, path)


def roc(labels, probs, auc, path):
    figure, ax = plt.subplots(figsize=(5, 5))
    if auc is not None:
        fpr, tpr, _ = skm.roc_curve(labels, probs)
        ax.plot(fpr, tpr, lw=2, label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="False positive rate (1 - specificity)", ylabel="True positive rate (sensitivity)",
           title="ROC curve", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _save(figure, path)


def precision_recall(labels, probs, average_precision, path):
    figure, ax = plt.subplots(figsize=(5, 5))
    if average_precision is not None:
        precision, recall, _ = skm.precision_recall_curve(labels, probs)
        ax.plot(recall, precision, lw=2, label=f"model (AP {average_precision:.3f})")
    prevalence = float(np.mean(labels))
    ax.axhline(prevalence, ls="--", color="grey", label=f"prevalence {prevalence:.2f}")
    ax.set(xlabel="Recall (sensitivity)", ylabel="Precision", title="Precision-recall curve", xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(loc="lower left")
    return _save(figure, path)


def reliability(calibration, path):
    figure, ax = plt.subplots(figsize=(5, 5))
    curve = calibration["curve"]
    centers = [(b["bin_low"] + b["bin_high"]) / 2 for b in curve]
    width = 1.0 / calibration["bins"]
    ax.bar(centers, [b["observed_frequency"] for b in curve], width=width * 0.9, alpha=0.6, label="observed")
    ax.plot([b["mean_probability"] for b in curve], [b["observed_frequency"] for b in curve], "o-", color="C1",
            label="mean predicted vs observed")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlabel="Predicted probability of PNEUMONIA", ylabel="Observed frequency of PNEUMONIA",
           title=f"Reliability (ECE {calibration['expected_calibration_error']:.3f})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return _save(figure, path)


def history_figure(model_dir, folder):
    """[(training_curves.png in `folder`, caption)] from model_dir/history.json; [] without one."""
    history_path = os.path.join(model_dir, "history.json")
    if not os.path.isfile(history_path):
        return []
    with open(history_path) as f:
        return [(training_curves(json.load(f), os.path.join(folder, "training_curves.png")), "Training history")]


def training_curves(history, path):
    epochs = [h["epoch"] for h in history]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = (("loss", "Loss (binary cross-entropy)"), ("accuracy", "Accuracy"), ("auc", "AUC"),
              ("learning_rate", "Learning rate"))
    for ax, (key, title) in zip(axes.ravel(), panels):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [h.get(prefix + key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], style, ms=3,
                        label=("validation" if prefix else "training"))
        ax.set(title=title, xlabel="epoch")
        if key == "learning_rate":
            ax.set_yscale("log")
        elif ax.lines:
            ax.legend()
    figure.suptitle("Training history")
    figure.tight_layout()
    return _save(figure, path)


def sample_grid(images, labels, probs, names, path, title, threshold):
    """Images with their true label, probability and whether the prediction was right."""
    count = len(images)
    columns = min(count, 4) or 1
    rows = max(1, int(np.ceil(count / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, label, prob, name in zip(axes.ravel(), images, labels, probs, names):
        right = (prob >= threshold) == bool(label)
        ax.imshow(np.squeeze(image), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {CLASSES[int(label)]}\np={prob:.3f} {'correct' if right else 'WRONG'}\n{name[-30:]}",
                     fontsize=9, color="green" if right else "red")
    figure.suptitle(title)
    return _save(figure, path)


def roc_grid(labels, probs, names, per_finding, path, columns=4):
    """One ROC curve per finding of a multi-label set (ignored labels left out), in a grid."""
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(names):
            ax.axis("off")
            continue
        name, auc = names[k], per_finding[names[k]]["auc"]
        keep = labels[:, k] >= 0
        if auc is not None:
            fpr, tpr, _ = skm.roc_curve(labels[keep, k], probs[keep, k])
            ax.plot(fpr, tpr, lw=2)
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), title=f"{name}\nAUC {'n/a' if auc is None else f'{auc:.3f}'}")
        ax.tick_params(labelsize=7)
    figure.suptitle("ROC per finding (x: false positive rate, y: true positive rate)")
    figure.tight_layout()
    return _save(figure, path)
