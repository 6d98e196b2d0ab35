"""The evaluation command and library: every record once, metrics, thresholds, plots, report, errors."""
import csv
import json
import os
import shutil

import pytest

from cli import assert_one_line_error, run
from conftest import convert
from cxr_fast.config import EvalConfig
from cxr_fast.data import recordset
from cxr_fast.errors import InputError
from cxr_fast.evaluation import scoring
from cxr_fast.serving import inference

pytestmark = pytest.mark.heavy(40)  # ~seconds here; scheduled first (tests/conftest.py)

FIGURES = ("confusion_matrix.png", "roc.png", "precision_recall.png", "reliability.png", "training_curves.png",
           "samples.png")


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, records_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "test"
    result = scoring.evaluate(EvalConfig(model_dir=tiny_model_dir, data_dir=records_dir, threshold="auto",
                                            output_dir=str(out), bootstrap=100), log=lambda *_: None)
    return out, result


def test_every_record_scored_once(evaluated, records_dir):
    out, result = evaluated
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    record_set = recordset.open_record_set(records_dir)
    assert len(rows) == len({r["file"] for r in rows}) == record_set.num_records("test") == result["count"]
    assert list(rows[0]) == ["file", "patient", "label", "probability", "predicted"]
    assert all(int(r["predicted"]) == (float(r["probability"]) >= result["threshold"]) for r in rows)


def test_metrics_json_and_threshold_file(evaluated, tiny_model_dir):
    out, result = evaluated
    saved = json.load(open(out / "metrics.json"))
    for key in ("loss", "accuracy", "auc", "average_precision", "precision", "recall", "specificity", "f1",
                "confusion_matrix", "confidence_intervals", "calibration", "per_patient", "threshold"):
        assert key in saved, key
    choice = json.load(open(os.path.join(tiny_model_dir, "threshold.json")))
    assert choice["threshold"] == pytest.approx(saved["threshold"]) and choice["chosen_on"] == "val"
    assert inference.saved_threshold(tiny_model_dir) == pytest.approx(saved["threshold"])


def test_plots_and_report(evaluated):
    out, result = evaluated
    for name in FIGURES:
        assert (out / name).stat().st_size > 5000, name
    markdown = open(out / "report.md").read()
    assert "| accuracy |" in markdown and "report model 2" in markdown and "0.963" in markdown
    assert "95% CI" in markdown and "Split policy: patient" in markdown
    page = open(out / "report.html").read()
    assert page.count("data:image/png;base64,") >= len(FIGURES) and "<table>" in page


def test_image_split_warns(tiny_model_dir, synthetic_dir, tmp_path):
    convert(synthetic_dir, tmp_path / "image_split", split="image")
    scoring.evaluate(EvalConfig(model_dir=tiny_model_dir, data_dir=str(tmp_path / "image_split"), bootstrap=0,
                                   samples=0, output_dir=str(tmp_path / "out")), log=lambda *_: None)
    assert "**Warning:** this record set uses the image split" in open(tmp_path / "out" / "report.md").read()


def test_bad_inputs(tiny_model_dir, records_dir, synthetic_dir, tmp_path):
    with pytest.raises(InputError, match="holds no model.keras"):
        scoring.evaluate(EvalConfig(model_dir=str(tmp_path), data_dir=records_dir))
    convert(synthetic_dir, tmp_path / "r48", image_size=48)
    with pytest.raises(InputError, match="holds 48x48 images but the model .* takes 32x32"):
        scoring.evaluate(EvalConfig(model_dir=tiny_model_dir, data_dir=str(tmp_path / "r48")))
    convert(synthetic_dir, tmp_path / "no_test", split_fractions=(0.8, 0.2, 0.0))
    with pytest.raises(InputError, match="has no test split"):
        scoring.evaluate(EvalConfig(model_dir=tiny_model_dir, data_dir=str(tmp_path / "no_test")))
    with pytest.raises(InputError, match="--threshold"):
        EvalConfig(model_dir="m", data_dir="d", threshold="high").validate()


def test_cli(tiny_model_dir, records_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    result = run("cxr_fast.evaluate", f"--model_dir={model_dir}", f"--data_dir={records_dir}", "--split=val",
                 "--bootstrap=20")
    assert result.returncode == 0, result.stderr
    assert "report in" in result.stdout and (model_dir / "eval_val" / "report.html").is_file()
    assert_one_line_error(run("cxr_fast.evaluate", f"--model_dir={tmp_path / 'none'}", f"--data_dir={records_dir}"),
                          "holds no model.keras")
    # a wrong --data_dir is named in one line (checked before TensorFlow loads)
    assert_one_line_error(run("cxr_fast.evaluate", f"--model_dir={model_dir}", f"--data_dir={tmp_path / 'absent'}"),
                          "manifest.json not found")


def test_cli_never_replaces_the_model_or_a_users_folder(tiny_model_dir, records_dir, tmp_path):
    before = sorted(os.listdir(tiny_model_dir))
    for flags in ([f"--output_dir={tiny_model_dir}"], [f"--output_dir={tiny_model_dir}", "--overwrite"],
                  [f"--output_dir={os.path.dirname(tiny_model_dir)}", "--overwrite"]):
        result = run("cxr_fast.evaluate", f"--model_dir={tiny_model_dir}", f"--data_dir={records_dir}", *flags)
        assert_one_line_error(result, "--output_dir", "would replace the model being evaluated")
    assert sorted(os.listdir(tiny_model_dir)) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    result = run("cxr_fast.evaluate", f"--model_dir={tiny_model_dir}", f"--data_dir={records_dir}",
                 f"--output_dir={mine}")
    assert_one_line_error(result, "--output_dir", "--overwrite")
    assert os.listdir(mine) == ["notes.txt"]
