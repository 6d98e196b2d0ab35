"""Every figure is written, non-empty, and a real PNG."""
import numpy as np
from PIL import Image

from cxr_fast.evaluation import plots
from cxr_fast.tasks import binary_metrics


def _check(path):
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] > 300
    assert np.asarray(image.convert("L")).std() > 5  # not a blank canvas


def test_all_figures(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    probs = np.clip(labels * 0.5 + rng.uniform(0, 0.5, 60), 0, 1)
    result = binary_metrics.binary_metrics(labels, probs)
    history = [{"epoch": e, "loss": 1 / e, "val_loss": 1.2 / e, "accuracy": 0.5 + e / 20, "val_accuracy": 0.5,
                "val_auc": 0.6 + e / 30, "learning_rate": 1e-3 if e < 3 else 2e-4} for e in range(1, 6)]
    images = rng.integers(0, 255, (5, 32, 32, 1)).astype(np.uint8)
    paths = [
        plots.confusion_matrix(result["confusion_matrix"], str(tmp_path / "cm.png"), 0.5),
        plots.roc(labels, probs, result["auc"], str(tmp_path / "roc.png")),
        plots.precision_recall(labels, probs, result["average_precision"], str(tmp_path / "pr.png")),
        plots.reliability(binary_metrics.calibration(labels, probs), str(tmp_path / "rel.png")),
        plots.training_curves(history, str(tmp_path / "curves.png")),
        plots.sample_grid(images, labels[:5], probs[:5], [f"f{i}.jpeg" for i in range(5)], str(tmp_path / "s.png"),
                          "samples", 0.5),
    ]
    for path in paths:
        _check(path)


def test_degenerate_curves_still_draw(tmp_path):
    labels, probs = np.ones(5, int), np.linspace(0.2, 0.9, 5)
    _check(plots.roc(labels, probs, None, str(tmp_path / "roc.png")))
    _check(plots.precision_recall(labels, probs, None, str(tmp_path / "pr.png")))
