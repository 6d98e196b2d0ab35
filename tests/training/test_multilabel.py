"""Label-file sets end to end on generated data (convert -> train -> evaluate -> predict -> serve);
a multi-label head learns; a multi-label run resumes exactly.  The task's loss, class weights and
metrics on their own: tests/tasks."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import LABEL_OPTIONS, convert, make_labelled

from cxr_fast.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from cxr_fast.data import imaging, recordset
from cxr_fast.evaluation import scoring
from cxr_fast.serving import inference, savedmodel
from cxr_fast.training import loop

pytestmark = pytest.mark.heavy(100)  # ~seconds here; scheduled first (tests/conftest.py)


def _train(records, model_dir):
    """Default flags but for size: the tiny CNN at 32 px from scratch, 2 epochs of 3 steps of 8."""
    config = TrainConfig(model_dir=str(model_dir), data=DataConfig(data_dir=records, image_size=32, global_batch_size=8),
                         model=ModelConfig(backbone="tiny", image_size=32, weights="none"), epochs=2, steps_per_epoch=3)
    lines = []
    return loop.train_and_evaluate(config, log=lines.append), lines


@pytest.mark.parametrize("format", ["nih", "chexpert", "mimic", "rsna", "csv"])
def test_label_file_set_converts_trains_evaluates_and_predicts(labelled_records, tmp_path, format):
    labels, records, manifest = labelled_records(format)
    findings = tuple(manifest["findings"])
    summary, lines = _train(records, tmp_path / "model")
    assert summary["epochs_trained"] == 2 and summary["test"]["count"] == manifest["counts"]["test"]["total"]
    history = json.load(open(tmp_path / "model" / "history.json"))
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["val_loss"]) for h in history)
    assert json.load(open(tmp_path / "model" / "config.json"))["model"]["findings"] == list(findings)
    result = scoring.evaluate(EvalConfig(model_dir=str(tmp_path / "model"), data_dir=records, bootstrap=20,
                                         threshold="auto"), log=lambda *_: None)
    out = tmp_path / "model" / "eval_test"
    assert {"metrics.json", "predictions.csv", "report.md", "report.html"} <= set(os.listdir(out))
    if findings:
        assert any(f"multi-label set: {len(findings)} findings" in line for line in lines)
        assert set(result["per_finding"]) == set(findings) and "micro_auc" in result
        assert (out / "roc_grid.png").is_file()
        report = (out / "report.md").read_text()
        assert all(f"| {name} |" in report for name in findings)
        assert ("published AUC" in report) == (format == "nih")  # CheXNet's anchors for ChestX-ray14
    else:  # RSNA: a binary set, the reference head, the binary report without Kermany's reference numbers
        assert result["count"] == manifest["counts"]["test"]["total"] and (out / "roc.png").is_file()
        report = (out / "report.md").read_text()
        assert "NO_PNEUMONIA" in report and "report model 1" not in report
    model, threshold = inference.load(str(tmp_path / "model"))  # chosen on val: one per finding, or one
    assert threshold == (result["threshold"] if findings else result["threshold_choice"]["threshold"])
    assert isinstance(threshold, list) == bool(findings) and len(np.atleast_1d(threshold)) == max(len(findings), 1)
    film = os.path.join(os.path.dirname(labels), recordset.load_manifest(records)["skipped"][0]["file"])
    films = [os.path.join(manifest["settings"]["data_dir"], line.split(",")[0])
             for line in open(os.path.join(records, recordset.SPLITS_CSV)).read().splitlines()[1:3]]
    task = inference.task_of(str(tmp_path / "model"))
    classes = task.classes
    results = inference.classify(model, threshold, films + [film], task)
    assert "error" in results[-1]  # the skipped (missing or undecodable) file is an error line, the rest scored
    for result in results[:-1]:
        if findings:
            assert list(result["probabilities"]) == list(findings)
        else:  # RSNA's own names: its negatives are "no pneumonia", not all normal films
            assert classes == ("NO_PNEUMONIA", "PNEUMONIA") and result["label"] in classes
            assert 0 <= result["probability"] <= 1
    if format == "rsna":  # served under RSNA's names too (as PNG: the signature takes JPEG or PNG, not DICOM)
        pngs = [imaging.encode(imaging.load_gray(open(f, "rb").read(), 32), "png") for f in films]
        served = tf.saved_model.load(savedmodel.export(model, str(tmp_path / "export"), threshold, task=task))
        out = served.signatures["serving_default"](images=tf.constant(pngs))
        assert [c.decode() for c in out["class"].numpy()] == [r["label"] for r in results[:-1]]
    if format == "nih":  # the trained multi-label model served as TF Serving would: predict's answers
        served = tf.saved_model.load(savedmodel.export(model, str(tmp_path / "export"), threshold, task=task))
        out = served.signatures["serving_default"](images=tf.constant([open(f, "rb").read() for f in films]))
        assert [e.decode() for e in out["error"].numpy()] == ["", ""]
        for row, labels_row, result in zip(out["probabilities"].numpy(), out["labels"].numpy(), results):
            np.testing.assert_allclose(row, [result["probabilities"][n] for n in findings], atol=0.01)  # resize filter
            np.testing.assert_array_equal(labels_row, (row >= np.array(threshold)).astype(int))  # each its own
            assert result["findings"] == [n for n, t in zip(findings, threshold) if result["probabilities"][n] >= t]


def test_multilabel_head_learns_the_finding_that_shows(tmp_path):
    # The generic-CSV stand-in: `opacity` films carry opacities, `effusion` and `nodule` (aligned:
    # Effusion, Nodule) are drawn at random.  Default flags (the tiny CNN at 32 px, 5 epochs of 20 steps of 32): seen test AUC 0.88
    # for opacity, 0.56 for both random findings.
    labels = make_labelled(tmp_path / "data", "csv", num_patients=160, seed=1)
    convert(tmp_path / "data", tmp_path / "records", labels=labels, format="csv", **LABEL_OPTIONS["csv"])
    config = TrainConfig(model_dir=str(tmp_path / "model"),
                         data=DataConfig(data_dir=str(tmp_path / "records"), image_size=32, global_batch_size=32),
                         model=ModelConfig(backbone="tiny", image_size=32, weights="none"), epochs=5,
                         steps_per_epoch=20)
    test = loop.train_and_evaluate(config, log=lambda *_: None)["test"]
    assert test["per_finding"]["opacity"]["auc"] > 0.75
    assert test["per_finding"]["opacity"]["auc"] > max(test["per_finding"][n]["auc"] for n in ("Effusion", "Nodule"))


def test_multilabel_run_stopped_mid_epoch_resumes_to_the_uninterrupted_result(labelled_records, tmp_path,
                                                                                monkeypatch):
    _, records, _ = labelled_records("chexpert")  # uncertain labels ignored: the masked loss
    whole, _ = _train(records, tmp_path / "whole")

    def preempted(*args):  # called at the end of epoch 1, before its end-of-epoch checkpoint
        raise RuntimeError("preempted")

    config = TrainConfig(model_dir=str(tmp_path / "parts"),
                         data=DataConfig(data_dir=records, image_size=32, global_batch_size=8),
                         model=ModelConfig(backbone="tiny", image_size=32, weights="none"), epochs=2, steps_per_epoch=3,
                         checkpoint_every_secs=0)  # a checkpoint after every step but an epoch's last
    with monkeypatch.context() as patch:
        patch.setattr(loop, "constant_predictions_note", preempted)
        with pytest.raises(RuntimeError, match="preempted"):
            loop.train_and_evaluate(config, log=lambda *_: None)
    lines = []
    parts = loop.train_and_evaluate(config, log=lines.append)
    assert any("resuming at epoch 1, step 2" in line for line in lines)
    assert parts["weights_sha256"] == whole["weights_sha256"]
