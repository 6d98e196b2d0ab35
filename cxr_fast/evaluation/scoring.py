"""Scoring a split with a trained model: predictions, metrics, plots and the report.

    model_dir/model.keras + record set -> eval_{split}/
        predictions.csv (file, patient, label, probability, predicted)
        metrics.json    (cxr_fast.evaluation.metrics.evaluate + threshold + settings)
        confusion_matrix.png roc.png precision_recall.png reliability.png training_curves.png
        samples.png mistakes.png
        report.md report.html
With `threshold=auto` the threshold is chosen on the val split and kept in
model_dir/threshold.json, where `predict` and `export` find it.
"""
import csv
import io
import json
import os

import numpy as np
import tensorflow as tf

from cxr_fast import atomic
from cxr_fast.config import DataConfig
from cxr_fast.data import pipeline, recordset
from cxr_fast.errors import InputError
from cxr_fast.evaluation import findings, metrics, multilabel, plots, report
from cxr_fast.serving import inference

def _score(model, record_set, split, data_config, keep_images=False):
    """(labels, probs, patients, files, images) for every record of the split, in order; images
    (the whole split decoded) only with `keep_images`, for the sample and mistake grids."""
    predict_fn = tf.function(lambda images: model(images, training=False))
    with pipeline.readable_errors(record_set.root):
        labels, probs, extras = inference.predict_dataset(
            pipeline.eval_dataset(record_set, split, data_config, with_metadata=True), predict_fn,
            keep_images=keep_images)
    return labels.astype(int), probs, extras["patient"], extras["filename"], extras.get("images")


def _open(config, model):
    record_set = recordset.open_record_set(config.data_dir, config.verify)
    size, channels = model.input_shape[1], model.input_shape[3]
    stored = record_set.stored_size
    if stored != (size, size):
        raise InputError(f"--data_dir={config.data_dir} holds {stored[0]}x{stored[1]} images but the model in "
                         f"{config.model_dir} takes {size}x{size}; evaluate on records written with "
                         f"--image_size={size}")
    record_set.check_split(config.split)
    return record_set, DataConfig(data_dir=config.data_dir, image_size=size, global_batch_size=config.batch_size,
                                  channels=channels)


def _threshold(config, model, record_set, data_config):
    """The decision threshold and how it was chosen; with `auto`, chosen on val and saved for
    `predict` and `export` (a multi-label set: one per finding, in the manifest's order)."""
    if config.threshold != "auto":
        return float(config.threshold), {"method": "fixed"}
    if "val" not in record_set.files:
        raise InputError("--threshold=auto chooses the threshold on the val split, which this record set lacks")
    labels, probs, *_ = _score(model, record_set, "val", data_config)
    target = config.target_recall or None
    choice = {"method": (f"target recall {target}" if target else "Youden's J")
              + (" per finding" if record_set.findings else ""), "chosen_on": "val"}
    if record_set.findings:
        threshold = multilabel.choose_thresholds(labels, probs, target)
        choice.update(threshold=threshold, findings=list(record_set.findings),
                      val=multilabel.scores(labels, probs, record_set.findings, threshold))
    else:
        threshold = metrics.choose_threshold(labels, probs, target)
        choice.update(threshold=threshold, val=metrics.binary_metrics(labels, probs, threshold))
    atomic.write_json(os.path.join(config.model_dir, inference.THRESHOLD_FILE), choice)
    return threshold, choice


def _predictions_csv(path, files, patients, labels, probs, threshold):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "patient", "label", "probability", "predicted"])
    for row in zip(files, patients, labels, probs):
        writer.writerow([row[0], row[1], int(row[2]), repr(float(row[3])), int(row[3] >= threshold)])
    atomic.write_text(path, buffer.getvalue())


def evaluate(config, log=print):
    """Runs the evaluation described by an EvalConfig; returns metrics.json's content."""
    config.validate()
    model, _ = inference.load(config.model_dir, flag="--model_dir")
    record_set, data_config = _open(config, model)
    output_dir = config.output_path()
    threshold, choice = _threshold(config, model, record_set, data_config)
    if record_set.findings:
        labels, probs, patients, files, _ = _score(model, record_set, config.split, data_config)
        return findings.evaluate(config, record_set, (threshold, choice), (labels, probs, patients, files),
                                 output_dir, log)
    labels, probs, patients, files, images = _score(model, record_set, config.split, data_config,
                                                    keep_images=bool(config.samples))
    result = metrics.evaluate(labels, probs, patients, threshold, config.bootstrap)
    result["threshold_choice"] = choice
    result["split"] = config.split
    with atomic.staged_dir(output_dir, config.overwrite, "--output_dir", "evaluate", config.inputs()) as staging:
        _predictions_csv(os.path.join(staging, "predictions.csv"), files, patients, labels, probs, threshold)
        atomic.write_json(os.path.join(staging, "metrics.json"), result)
        figures = _figures(staging, config, result, labels, probs, files, images, threshold)
        report.write(_report_blocks(config, record_set, result, figures), staging,
                     f"cxr_fast evaluation: {config.split}")
    log(f"{config.split}: " + ", ".join(f"{k} {report.fmt(result[k])}" for k in
                                         ("accuracy", "auc", "precision", "recall", "f1")) +
        f" at threshold {threshold:.3f}; report in {os.path.join(output_dir, 'report.html')}")
    return result


def _figures(folder, config, result, labels, probs, files, images, threshold):
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    figures = [
        (plots.confusion_matrix(result["confusion_matrix"], path("confusion_matrix.png"), threshold),
         "Confusion matrix"),
        (plots.roc(labels, probs, result["auc"], path("roc.png")), "ROC curve"),
        (plots.precision_recall(labels, probs, result["average_precision"], path("precision_recall.png")),
         "Precision-recall curve"),
        (plots.reliability(result["calibration"], path("reliability.png")), "Reliability diagram"),
    ]
    history_path = os.path.join(config.model_dir, "history.json")
    if os.path.isfile(history_path):
        with open(history_path) as f:
            figures.append((plots.training_curves(json.load(f), path("training_curves.png")), "Training history"))
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
    if manifest["settings"]["split"] == "image" or manifest["patients"]["in_several_splits"]:
        blocks.append(("warn", f"this record set uses the {manifest['settings']['split']} split: "
                               f"{manifest['patients']['in_several_splits']} patients have films in more than one "
                               "split, so these numbers are optimistic (as the reference report's were)."))
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
    config_path = os.path.join(config.model_dir, "config.json")
    if os.path.isfile(config_path):
        with open(config_path) as f:
            train = json.load(f)
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
