"""Scoring a split with a trained model: predictions, metrics, plots and the report.

    model_dir/model.keras + record set -> eval_{split}/
        predictions.csv (the task's rows: binary file, patient, label, probability, predicted;
                         multi-label label_* and probability_* per finding, label -1: ignored)
        metrics.json    (the task's `evaluate` + threshold choice + split)
        the figures and report.md / report.html of the task's report (binary_report,
        findings_report)
With `threshold=auto` the threshold (a multi-label set: one per finding) is chosen on the val
split and kept in model_dir/threshold.json, where `predict` and `export` find it.
"""
import csv
import io
import os

import tensorflow as tf

from cxr_fast import atomic
from cxr_fast.config import DataConfig
from cxr_fast.data import pipeline, recordset
from cxr_fast.errors import InputError
from cxr_fast.evaluation import binary_report, findings_report
from cxr_fast.serving import inference
from cxr_fast.tasks import task as task_lib

REPORTS = {"binary": binary_report, "multilabel": findings_report}  # the report layout of each task kind


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


def _threshold(config, task, model, record_set, data_config):
    """The decision threshold and how it was chosen; with `auto`, chosen on val by the task and
    saved for `predict` and `export` (a multi-label set: one per finding, in the manifest's order)."""
    if config.threshold != "auto":
        return float(config.threshold), {"method": "fixed"}
    if "val" not in record_set.files:
        raise InputError("--threshold=auto chooses the threshold on the val split, which this record set lacks")
    labels, probs, *_ = _score(model, record_set, "val", data_config)
    threshold, choice = task.choose_threshold(labels, probs, config.target_recall or None)
    atomic.write_json(os.path.join(config.model_dir, inference.THRESHOLD_FILE), choice)
    return threshold, choice


def _predictions_csv(path, rows):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    atomic.write_text(path, buffer.getvalue())


def evaluate(config, log=print):
    """Runs the evaluation described by an EvalConfig; returns metrics.json's content."""
    config.validate()
    model, _ = inference.load(config.model_dir, flag="--model_dir")
    record_set, data_config = _open(config, model)
    task = task_lib.for_record_set(record_set)
    layout = REPORTS[task.kind]
    output_dir = config.output_path()
    threshold, choice = _threshold(config, task, model, record_set, data_config)
    labels, probs, patients, files, images = _score(model, record_set, config.split, data_config,
                                                    keep_images=layout.needs_images(config))
    result = task.evaluate(labels, probs, patients, threshold, config.bootstrap, anchors=layout.anchors(record_set))
    result["threshold_choice"] = choice
    result["split"] = config.split
    with atomic.staged_dir(output_dir, config.overwrite, "--output_dir", "evaluate", config.inputs()) as staging:
        _predictions_csv(os.path.join(staging, "predictions.csv"),
                         task.prediction_rows(files, patients, labels, probs, threshold))
        atomic.write_json(os.path.join(staging, "metrics.json"), result)
        layout.write(staging, config, record_set, result, (labels, probs, files, images))
    log(f"{config.split}: {layout.headline(result)}; report in {os.path.join(output_dir, 'report.html')}")
    return result
