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
from cxr_fast.evaluation import binary_report, external, findings_report
from cxr_fast.serving import inference
from cxr_fast.tasks import task as task_lib

REPORTS = {"binary": binary_report, "multilabel": findings_report}  # the report layout of each task kind


def _score(model, task, record_set, split, data_config, keep_images=False):
    """(labels, probs, patients, files, images) for every record of the split, in order, the
    probabilities as the model's task gives them; images (the whole split decoded) only with
    `keep_images`, for the sample and mistake grids."""
    predict_fn = tf.function(lambda images: task.predictions(model(images, training=False)))
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
    labels, probs, *_ = _score(model, task, record_set, "val", data_config)
    threshold, choice = task.choose_threshold(labels, probs, config.target_recall or None)
    atomic.write_json(os.path.join(config.model_dir, inference.THRESHOLD_FILE), choice)
    return threshold, choice


def _predictions_csv(path, rows):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    atomic.write_text(path, buffer.getvalue())


def evaluate(config, log=print):
    """Runs the evaluation described by an EvalConfig; returns metrics.json's content.

    A record set the model was trained on, labelled with the model's outputs, is scored by its
    task (thresholds chosen on its val split with `auto`); any other (another hospital's films,
    one set of a mix) over the findings both name (`external`)."""
    config.validate()
    model, saved = inference.load(config.model_dir, flag="--model_dir")
    record_set, data_config = _open(config, model)
    model_task, task = inference.task_of(config.model_dir), task_lib.for_record_set(record_set)
    trained = external.trained_on(config.model_dir, config.data_dir)
    if model_task.output_names() != task.output_names() or trained is False:
        return _evaluate_on_other(config, model, saved, (model_task, task), record_set, data_config, trained, log)
    layout = REPORTS[task.kind]
    threshold, choice = _threshold(config, task, model, record_set, data_config)
    labels, probs, patients, files, images = _score(model, task, record_set, config.split, data_config,
                                                    keep_images=layout.needs_images(config))
    result = task.evaluate(labels, probs, patients, threshold, config.bootstrap, anchors=layout.anchors(record_set))
    return _write(config, layout, task, record_set, (labels, probs, patients, files, images),
                  (threshold, choice), result, log)


def _evaluate_on_other(config, model, saved, tasks, record_set, data_config, trained, log):
    """The model on a set labelled otherwise, over the findings both name (`external`); `tasks`:
    (the model's task, the record set's)."""
    model_task, set_task = tasks
    pairs, skipped = external.pairing(model_task, set_task, config.data_dir)
    outputs = model.output_shape[-1]
    threshold, choice = external.thresholds(config, model_task, outputs, saved, pairs)
    labels, probs, patients, files, _ = _score(model, model_task, record_set, config.split, data_config)
    labels, probs = external.select(pairs, labels, probs, outputs, set_task.outputs)
    task = external.scoring_task(pairs)
    result = task.evaluate(labels, probs, patients, threshold, config.bootstrap)
    external.annotate(result, pairs, skipped, config.model_dir, model_task, record_set, external=not trained)
    return _write(config, findings_report, task, record_set, (labels, probs, patients, files, None),
                  (threshold, choice), result, log)


def _write(config, layout, task, record_set, scored, threshold_choice, result, log):
    """predictions.csv, metrics.json and the report, complete or not at all; returns the result."""
    labels, probs, patients, files, images = scored
    threshold, choice = threshold_choice
    result["threshold_choice"] = choice
    result["split"] = config.split
    output_dir = config.output_path()
    with atomic.staged_dir(output_dir, config.overwrite, "--output_dir", "evaluate", config.inputs()) as staging:
        _predictions_csv(os.path.join(staging, "predictions.csv"),
                         task.prediction_rows(files, patients, labels, probs, threshold))
        atomic.write_json(os.path.join(staging, "metrics.json"), result)
        layout.write(staging, config, record_set, result, (labels, probs, files, images))
    log(f"{config.split}: {layout.headline(result)}; report in {os.path.join(output_dir, 'report.html')}")
    return result
