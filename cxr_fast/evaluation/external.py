"""A model scored on a record set whose labels are not its own outputs: another hospital's films
(external validation), or one set of a mix it was trained on.

    python -m cxr_fast.evaluate --model_dir=runs/nih --data_dir=records/chexpert256

Scored over the findings both name, by their aligned names (`cxr_fast.tasks.vocabulary`): a
binary model (Kermany, RSNA) on a multi-label set's Pneumonia, a multi-label model on a binary
set's finding, NIH's Effusion on CheXpert's Pleural Effusion.  The thresholds are the model's own
(threshold.json, chosen on its own val split; else 0.5) or --threshold=N, never chosen on the
set being scored.  metrics.json adds `scored_findings`, `skipped_findings` (and why), `external`,
and per finding `internal_auc` (the model's AUC on its own test split, from summary.json) and
`approximate` (why a mapping is not exact).
"""
import json
import os

import numpy as np

from cxr_fast.errors import InputError
from cxr_fast.serving import inference
from cxr_fast.tasks import task as task_lib
from cxr_fast.tasks import vocabulary


def pairing(model_task, set_task, data_dir):
    """[(aligned name, model output, set output)] of the findings both name, in the model's order,
    and {name: why it is not scored}."""
    model_names, set_names = model_task.output_names(), set_task.output_names()
    pairs = [(name, k, set_names.index(name)) for k, name in enumerate(model_names) if name in set_names]
    if not pairs:
        raise InputError(f"--data_dir={data_dir} labels none of the model's findings ({', '.join(model_names)}); "
                         f"it labels {', '.join(set_names)}")
    skipped = {name: "the record set does not label it" for name in model_names if name not in set_names}
    skipped.update({name: "the model has no output for it" for name in set_names if name not in model_names})
    return pairs, skipped


def trained_on(model_dir, data_dir):
    """Whether the model's training run read `data_dir` (config.json); None when it does not say."""
    trained = inference.run_config(model_dir).get("data", {}).get("data_dir")
    if trained is None:
        return None
    return os.path.abspath(data_dir) in {os.path.abspath(d) for d in trained.split(",") if d}


def select(pairs, labels, probs, model_outputs, set_outputs):
    """The paired columns: labels [N, pairs] from the set's outputs, probabilities from the model's."""
    labels = np.reshape(labels, (len(labels), set_outputs))[:, [p[2] for p in pairs]]
    probs = np.reshape(probs, (len(probs), model_outputs))[:, [p[1] for p in pairs]]
    return labels, probs


def thresholds(config, model_task, outputs, saved, pairs):
    """(per paired finding, how chosen): the model's own thresholds, or the one given."""
    if config.threshold == "auto":
        chosen, method = saved, "the model's own (threshold.json: chosen on its val split; 0.5 without one)"
    else:
        chosen, method = float(config.threshold), "fixed"
    own = model_task.output_thresholds(outputs, chosen)
    return [own[p[1]] for p in pairs], {"method": method}


def annotate(result, pairs, skipped, model_dir, model_task, record_set, external):
    """Adds what was scored and skipped, the model's own test AUCs and approximate mappings."""
    internal = _internal_aucs(model_dir, model_task)
    source = record_set.manifest["settings"].get("format") or "kermany"
    for name, _, _ in pairs:
        finding = result["per_finding"][name]
        finding["internal_auc"] = internal.get(name)
        finding["approximate"] = vocabulary.approximate(source, name) or None
    result.update(external=external, scored_findings=[p[0] for p in pairs], skipped_findings=skipped)
    return result


def _internal_aucs(model_dir, model_task):
    """{finding: AUC} of the model on its own test split (summary.json, written by training)."""
    path = os.path.join(model_dir, "summary.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        test = json.load(f).get("test")
    return model_task.aucs(test) if test else {}


def scoring_task(pairs):
    """The task the paired findings are scored as: one sigmoid per finding."""
    return task_lib.create(tuple(p[0] for p in pairs))
