"""The report of a binary model (Kermany, RSNA): metrics with patient-bootstrap CIs beside the
reference's numbers, data counts, training settings, and the figures.

    eval_{split}/ confusion_matrix.png roc.png precision_recall.png reliability.png
                  training_curves.png samples.png mistakes.png report.md report.html
Written by `cxr_fast.evaluation.scoring.evaluate` for a record set whose task is binary.
"""
import os

import numpy as np

from cxr_fast.evaluation import plots, report
from cxr_fast.serving import inference


def needs_images(config):
    """The sample and mistake grids show films: the split is kept decoded when they are asked for."""
    return bool(config.samples)


def anchors(record_set):
    """Published numbers per output for metrics.json: none (the reference's are in the report's table)."""
    return None


def headline(result):
    return (", ".join(f"{k} {report.fmt(result[k])}" for k in ("accuracy", "auc", "precision", "recall", "f1"))
            + f" at threshold {result['threshold']:.3f}")


def write(folder, config, record_set, result, scored):
    """The figures and report.md / report.html into `folder`; `scored`: (labels, probs, files, images)."""
    figures = _figures(folder, config, result, *scored)
    report.write(_report_blocks(config, record_set, result, figures), folder, f"cxr_fast evaluation: {config.split}")


def _figures(folder, config, result, labels, probs, files, images):
    threshold = result["threshold"]
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    figures = [
        (plots.confusion_matrix(result["confusion_matrix"], path("confusion_matrix.png"), threshold),
         "Confusion matrix"),
        (plots.roc(labels, probs, result["auc"], path("roc.png")), "ROC curve"),
        (plots.precision_recall(labels, probs, result["average_precision"], path("precision_recall.png")),
         "Precision-recall curve"),
        (plots.reliability(result["calibration"], path("reliability.png")), "Reliability diagram"),
    ]
    figures += plots.history_figure(config.model_dir, folder)
    if config.samples:
        chosen = np.random.default_rng(0).choice(len(labels), min(config.samples, len(labels)), replace=False)
        figures.append((plots.sample_grid(images[chosen], labels[chosen], probs[chosen], [os.path.basename(files[i]) for i in chosen],
                                          path("samples.png"), f"{len(chosen)} random {config.split} images (seed 0)",
                                          threshold), "Random sample"))
        wrong = np.flatnonzero((probs >= threshold) != labels.astype(bool))
        worst = wrong[np.argsort(-np.abs(probs[wrong] - threshold))][:config.samples]
        if len(worst):
            figures.append((plots.sample_grid(images[worst], labels[worst], probs[worst], [os.path.basename(files[i]) for i in worst],
                                              path("mistakes.png"), "Most confident mistakes", threshold),
                            "Most confident mistakes"))
    return figures


def _report_blocks(config, record_set, result, figures):
    manifest = record_set.manifest
    blocks = [("h1", f"cxr_fast evaluation: {config.split} split"),
              ("p", f"Model: {config.model_dir}. Records: {config.data_dir} "
                    f"({manifest['image']['height']} px {manifest['image']['encoding']}). "
                    f"Threshold {result['threshold']:.3f} ({result['threshold_choice']['method']}).")]
    blocks += report.split_warning(manifest)
    ci = result["confidence_intervals"] or {}
    kermany = manifest["settings"].get("source", "folders") == "folders"  # the reference's numbers are Kermany's
    references = report.REFERENCE_RESULTS if kermany else {}
    rows = []
    for name in ("accuracy", "precision", "recall", "f1", "auc", "specificity", "average_precision", "loss"):
        interval = ci.get(name)
        rows.append([name, result[name], f"{report.fmt(interval['low'])}-{report.fmt(interval['high'])}"
                     if interval else "n/a", *(ref.get(name) for ref in references.values())])
    source = f"Reference numbers from {report.REFERENCE_SOURCE}. " if kermany else ""
    blocks += [("h2", "Metrics"), ("table", ["metric", "cxr_fast", "95% CI (patients resampled)", *references], rows),
               ("p", f"{source}Per patient (positive if any film is, "
                     f"score the max): accuracy {report.fmt(result['per_patient']['accuracy'])}, AUC "
                     f"{report.fmt(result['per_patient']['auc'])}, recall {report.fmt(result['per_patient']['recall'])}"
                     f" over {result['patients']} patients. Expected calibration error "
                     f"{report.fmt(result['calibration']['expected_calibration_error'])}.")]
    counts, classes = manifest["counts"], manifest["classes"]
    blocks += [("h2", "Data"), ("table", ["split", *classes, "total", "patients"],
                                [[s, *(counts[s][c] for c in classes), counts[s]["total"],
                                  counts[s]["patients"]] for s in ("train", "val", "test")]),
               ("p", f"Split policy: {manifest['settings']['split']} (seed {manifest['settings']['seed']}); "
                     f"duplicates removed {manifest['duplicates_removed']}; files skipped {manifest['skipped_count']}.")]
    train = inference.run_config(config.model_dir)
    if train:
        blocks += [("h2", "Training settings"), ("table", ["setting", "value"], [
            ["backbone", f"EfficientNet{train['model']['backbone']}"], ["weights", train["model"]["weights"]],
            ["image size", train["model"]["image_size"]], ["batch size", train["data"]["global_batch_size"]],
            ["learning rate", train["learning_rate"]], ["epochs", train["epochs"]],
            ["freeze", train["model"]["freeze_layers"] or train["model"]["freeze_fraction"]],
            ["augmentation", f"{train['augment']['kind']} ({train['augment']['impl']})"],
            ["class weight", train["class_weight"]]])]
    blocks.append(("h2", "Figures"))
    blocks += [("img", path, caption) for path, caption in figures]
    return blocks
