"""Many sets as one on one device: `train` on Kermany's folders and an NIH stand-in together, then
that model scored on a CheXpert stand-in it never saw (external validation) and the binary
Kermany model on NIH's Pneumonia.  Several replicas: the same mixed run killed, resumed,
evaluated with the `evaluate` command and exported in tests/test_topology.py."""
import json

import pytest

from cli import assert_one_line_error, run
from test_topology import SMALL

from cxr_fast.config import EvalConfig
from cxr_fast.errors import InputError
from cxr_fast.evaluation import external, scoring
from cxr_fast.tasks import task as task_lib

pytestmark = pytest.mark.heavy(45)  # ~seconds here; scheduled first (tests/conftest.py)


def _json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def mixed_model(records_dir, labelled_records, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("mixed") / "run"
    nih = labelled_records("nih")[1]
    trained = run("cxr_fast.train", f"--data_dir={records_dir},{nih}", f"--model_dir={model_dir}", *SMALL,
                  "--epochs=1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    return model_dir, trained.stdout


def test_two_sets_train_as_one_on_their_aligned_findings(mixed_model):
    model_dir, log = mixed_model
    findings = _json(model_dir / "config.json")["model"]["findings"]
    assert findings[0] == "Pneumonia" and "Hernia" in findings and len(findings) == 14  # Kermany's is NIH's too
    test = _json(model_dir / "summary.json")["test"]
    assert set(test["per_finding"]) == set(findings)
    # Kermany's films label Pneumonia only: the other 13 are scored on NIH's test films alone
    assert test["per_finding"]["Hernia"]["count"] < test["per_finding"]["Pneumonia"]["count"]
    assert "multi-label set: 14 findings" in log


def test_a_model_is_scored_on_a_set_it_never_saw(mixed_model, labelled_records):
    model_dir, _ = mixed_model
    chexpert = labelled_records("chexpert")[1]
    out = model_dir.parent / "on_chexpert"  # the library call of `evaluate` (its CLI on a mix's model: test_topology)
    scoring.evaluate(EvalConfig(model_dir=str(model_dir), data_dir=chexpert, output_dir=str(out), bootstrap=50),
                     log=lambda *_: None)
    metrics = _json(out / "metrics.json")
    assert metrics["external"] is True
    assert {"Effusion", "Pneumonia", "Edema"} <= set(metrics["scored_findings"])  # Effusion = Pleural Effusion
    assert metrics["skipped_findings"]["Hernia"] == "the record set does not label it"
    assert metrics["skipped_findings"]["Support Devices"] == "the model has no output for it"
    assert "internal_auc" in metrics["per_finding"]["Effusion"]
    report = (out / "report.md").read_text()
    assert "External validation" in report and "AUC on the model's own test split" in report
    header = (out / "predictions.csv").read_text().splitlines()[0]
    assert header.startswith("file,patient,label_") and "probability_Effusion" in header


def test_a_binary_model_is_scored_on_a_multi_label_sets_matching_finding(tiny_model_dir, labelled_records,
                                                                         tmp_path):
    nih = labelled_records("nih")[1]  # the library call `evaluate` makes (its CLI: the test above)
    scoring.evaluate(EvalConfig(model_dir=tiny_model_dir, data_dir=nih, output_dir=str(tmp_path / "on_nih"),
                                bootstrap=50), log=lambda *_: None)
    metrics = _json(tmp_path / "on_nih" / "metrics.json")
    assert metrics["scored_findings"] == ["Pneumonia"] and metrics["external"] is True
    assert "Hernia" in metrics["skipped_findings"]
    assert metrics["per_finding"]["Pneumonia"]["approximate"]  # NIH's labels: mined from reports


def test_findings_no_set_labels_are_one_line_errors(records_dir, labelled_records, tmp_path):
    nih = labelled_records("nih")[1]
    result = run("cxr_fast.train", f"--data_dir={records_dir},{nih}", f"--model_dir={tmp_path / 'm'}",
                 "--findings=Tuberculosis", *SMALL)
    assert_one_line_error(result, "--findings")
    result = run("cxr_fast.train", f"--data_dir={records_dir},{nih}", f"--model_dir={tmp_path / 'm'}",
                 "--mix=1,2,3", *SMALL)
    assert_one_line_error(result, "--mix")


def test_pairing_names_what_is_scored_and_why_the_rest_is_not():
    model = task_lib.create(("Effusion", "Hernia"))
    chexpert = task_lib.create(("Pleural Effusion", "Support Devices"))
    pairs, skipped = external.pairing(model, chexpert, "chexpert")
    assert pairs == [("Effusion", 0, 0)]
    assert skipped == {"Hernia": "the record set does not label it",
                       "Support Devices": "the model has no output for it"}
    with pytest.raises(InputError, match="labels none of the model's findings"):
        external.pairing(task_lib.create(("Hernia",)), chexpert, "chexpert")
