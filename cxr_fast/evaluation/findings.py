"""Scoring a multi-label record set's split: per-finding metrics, the ROC grid and the report.

    model_dir/model.keras + record set -> eval_{split}/
        predictions.csv (file, patient, then label_* and probability_* per finding; label -1: ignored)
        metrics.json    (cxr_fast.evaluation.multilabel.evaluate + settings)
        roc_grid.png training_curves.png report.md report.html
Called by `cxr_fast.evaluation.scoring.evaluate` when the manifest lists findings.  The
threshold is one number for every finding, or with `--threshold=auto` one per finding chosen
on val (scoring), kept in threshold.json for `predict` and `export`.
"""
import csv
import io
import json
import os

from cxr_fast import atomic
from cxr_fast.evaluation import multilabel, plots, report

ANCHORS = {"nih": (multilabel.CHEXNET_AUC, "CheXNet (Rajpurkar et al. 2017, Table 2), DenseNet-121 at 224 px "
                                           "from ImageNet weights on ChestX-ray14")}


def _predictions_csv(path, names, files, patients, labels, probs):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "patient", *(f"label_{n}" for n in names), *(f"probability_{n}" for n in names)])
    for file, patient, label_row, prob_row in zip(files, patients, labels, probs):
        writer.writerow([file, patient, *(int(v) for v in label_row), *(repr(float(p)) for p in prob_row)])
    atomic.write_text(path, buffer.getvalue())


def evaluate(config, record_set, threshold_choice, scored, output_dir, log):
    """`threshold_choice` = (a number or one per finding, how it was chosen); `scored` = (labels
    [N, findings], probs, patients, files); returns metrics.json's content."""
    labels, probs, patients, files = scored
    threshold, choice = threshold_choice
    names = record_set.findings
    anchors, anchor_source = ANCHORS.get(record_set.manifest["settings"].get("format"), (None, None))
    result = multilabel.evaluate(labels, probs, patients, names, threshold, config.bootstrap, anchors=anchors)
    result["threshold_choice"] = choice
    result["split"] = config.split
    with atomic.staged_dir(output_dir, config.overwrite, "--output_dir", "evaluate", config.inputs()) as staging:
        _predictions_csv(os.path.join(staging, "predictions.csv"), names, files, patients, labels, probs)
        atomic.write_json(os.path.join(staging, "metrics.json"), result)
        figures = [(plots.roc_grid(labels, probs, names, result["per_finding"], os.path.join(staging, "roc_grid.png")),
                    "ROC per finding")]
        history_path = os.path.join(config.model_dir, "history.json")
        if os.path.isfile(history_path):
            with open(history_path) as f:
                figures.append((plots.training_curves(json.load(f), os.path.join(staging, "training_curves.png")),
                                "Training history"))
        report.write(_blocks(config, record_set, result, figures, anchor_source), staging,
                     f"cxr_fast evaluation: {config.split}")
    log(f"{config.split}: macro AUC {report.fmt(result['auc'])}, micro AUC {report.fmt(result['micro_auc'])}, "
        f"macro AP {report.fmt(result['average_precision'])} over {len(names)} findings; "
        f"report in {os.path.join(output_dir, 'report.html')}")
    return result


def _thresholds(result):
    choice = result["threshold_choice"]
    if isinstance(result["threshold"], list):
        return f"thresholds per finding ({choice['method']} on {choice['chosen_on']}; table)"
    return f"threshold {result['threshold']:.2f}"


def _interval(ci):
    return f"{report.fmt(ci['low'])}-{report.fmt(ci['high'])}" if ci else "n/a"


def _blocks(config, record_set, result, figures, anchor_source):
    settings = record_set.manifest["settings"]
    ci = result["confidence_intervals"] or {}
    blocks = [("h1", f"cxr_fast evaluation: {config.split} split, {len(result['per_finding'])} findings"),
              ("p", f"Model: {config.model_dir}. Records: {config.data_dir} ({settings.get('format')} label file, "
                    f"uncertain labels: {settings.get('uncertain')}, split: {settings['split']}). "
                    f"{result['count']} films of {result['patients']} patients, {result['labels_scored']} labels "
                    f"scored (ignored ones left out)."),
              ("p", f"Macro AUC {report.fmt(result['auc'])} (95% CI {_interval(ci.get('auc'))}), micro AUC "
                    f"{report.fmt(result['micro_auc'])} ({_interval(ci.get('micro_auc'))}), macro average precision "
                    f"{report.fmt(result['average_precision'])}; at {_thresholds(result)}: micro "
                    f"precision {report.fmt(result['precision'])}, recall {report.fmt(result['recall'])}. "
                    "Intervals resample patients.")]
    header = ["finding", "positives / scored", "AUC", "95% CI", "average precision", "95% CI", "threshold",
              "precision", "recall"]
    if anchor_source:
        header.append("published AUC")
    rows = []
    for name, f in result["per_finding"].items():
        row = [name, f"{f['positives']} / {f['count']}", f["auc"], _interval(f["auc_ci"]), f["average_precision"],
               _interval(f["average_precision_ci"]), f["threshold"], f["precision"], f["recall"]]
        rows.append(row + ([f.get("published_auc")] if anchor_source else []))
    blocks += [("h2", "Per finding"), ("table", header, rows)]
    if anchor_source:
        blocks.append(("p", f"Published AUCs: {anchor_source}; a different model, size and split, shown as a "
                            "scale, not a like-for-like comparison."))
    blocks.append(("h2", "Figures"))
    blocks += [("img", path, caption) for path, caption in figures]
    return blocks
