"""The report of a multi-label model (NIH, CheXpert, MIMIC, a CSV of findings): per finding AUC
and average precision with patient-bootstrap CIs, published AUCs where they exist, the ROC grid.

    eval_{split}/ roc_grid.png training_curves.png report.md report.html
Written by `cxr_fast.evaluation.scoring.evaluate` for a record set whose task is multi-label;
predictions.csv and metrics.json come from the task (`cxr_fast.tasks.task.FindingsTask`).
"""
import os

from cxr_fast.evaluation import plots, report
from cxr_fast.tasks import finding_metrics

ANCHORS = {"nih": (finding_metrics.CHEXNET_AUC, "CheXNet (Rajpurkar et al. 2017, Table 2), DenseNet-121 at 224 px "
                                                "from ImageNet weights on ChestX-ray14")}


def needs_images(config):
    return False


def _anchor(record_set):
    return ANCHORS.get(record_set.manifest["settings"].get("format"), (None, None))


def anchors(record_set):
    """Published AUCs per finding for the record set's format (metrics.json's `published_auc`), or None."""
    return _anchor(record_set)[0]


def headline(result):
    return (f"macro AUC {report.fmt(result['auc'])}, micro AUC {report.fmt(result['micro_auc'])}, "
            f"macro AP {report.fmt(result['average_precision'])} over {len(result['per_finding'])} findings")


def write(folder, config, record_set, result, scored):
    """The ROC grid, training curves and report.md / report.html into `folder`; `scored`: (labels,
    probs, files, images)."""
    labels, probs = scored[0], scored[1]
    names = tuple(result["per_finding"])
    figures = [(plots.roc_grid(labels, probs, names, result["per_finding"], os.path.join(folder, "roc_grid.png")),
                "ROC per finding")]
    figures += plots.history_figure(config.model_dir, folder)
    anchor_source = _anchor(record_set)[1]
    report.write(_blocks(config, record_set, result, figures, anchor_source), folder,
                 f"cxr_fast evaluation: {config.split}")


def _other_set_blocks(result):
    """What scoring a set the model's outputs do not match adds: which findings, which not and why,
    and the mappings that are approximate."""
    if "scored_findings" not in result:
        return []
    what = ("External validation: the model was not trained on this record set." if result["external"] else
            "One of the record sets the model was trained on, scored on the findings it labels.")
    skipped = "; ".join(f"{name} ({why})" for name, why in result["skipped_findings"].items()) or "none"
    blocks = [("p", f"{what} Scored over the findings both name (aligned names, docs/data-sets.md): "
                    f"{', '.join(result['scored_findings'])}. Not scored: {skipped}.")]
    notes = [f"{name}: {f['approximate']}" for name, f in result["per_finding"].items() if f.get("approximate")]
    if notes:
        blocks.append(("warn", "approximate mappings: " + "; ".join(notes)))
    return blocks


def _thresholds(result):
    choice = result["threshold_choice"]
    if isinstance(result["threshold"], list):
        return f"thresholds per finding ({choice['method']}" + (f" on {choice['chosen_on']}" if "chosen_on" in choice
                                                                  else "") + "; table)"
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
    blocks += report.split_warning(record_set.manifest) + _other_set_blocks(result)
    header = ["finding", "positives / scored", "AUC", "95% CI", "average precision", "95% CI", "threshold",
              "precision", "recall"]
    extra = [(key, title) for key, title in (("published_auc", "published AUC"),
                                             ("internal_auc", "AUC on the model's own test split"))
             if any(key in f for f in result["per_finding"].values())]
    header += [title for _, title in extra]
    rows = []
    for name, f in result["per_finding"].items():
        row = [name, f"{f['positives']} / {f['count']}", f["auc"], _interval(f["auc_ci"]), f["average_precision"],
               _interval(f["average_precision_ci"]), f["threshold"], f["precision"], f["recall"]]
        rows.append(row + [f.get(key) for key, _ in extra])
    blocks += [("h2", "Per finding"), ("table", header, rows)]
    if anchor_source:
        blocks.append(("p", f"Published AUCs: {anchor_source}; a different model, size and split, shown as a "
                            "scale, not a like-for-like comparison."))
    blocks.append(("h2", "Figures"))
    blocks += [("img", path, caption) for path, caption in figures]
    return blocks
