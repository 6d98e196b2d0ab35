"""The demo's stages through their command-line entry points, on a tiny set, in seconds not minutes.

The demo's own model (EfficientNetB0) trains in `.ci/run`'s `./demo.sh --quick`; here
`--backbone=tiny` keeps the plumbing check short.
`predict` runs with its default flags."""
import csv
import json
import os

import pytest

from cli import run

pytestmark = pytest.mark.heavy(60)  # ~seconds here; scheduled first (tests/conftest.py)


def test_demo_stages_end_to_end(tmp_path):
    images, records, model = tmp_path / "images", tmp_path / "records", tmp_path / "model"
    steps = [
        ("tools.make_synthetic", f"--output_dir={images}", "--num_patients=30", "--size_range=96,128"),
        ("tools.make_tfrecords", f"--data_dir={images}", f"--output_dir={records}", "--image_size=32"),
        ("cxr_fast.train", "--flagfile=demo.flags", f"--data_dir={records}", f"--model_dir={model}",
         "--image_size=32", "--epochs=1", "--steps_per_epoch=2", "--batch_size=8", "--backbone=tiny"),
        ("cxr_fast.evaluate", f"--model_dir={model}", f"--data_dir={records}", "--threshold=auto", "--bootstrap=50"),
    ]
    for module, *args in steps:
        result = run(module, *args)
        assert result.returncode == 0, (module, result.stderr[-2000:])
    report = model / "eval_test"
    for name in ("report.md", "report.html", "predictions.csv", "metrics.json", "roc.png", "confusion_matrix.png",
                 "training_curves.png"):
        assert (report / name).stat().st_size > 0, name
    assert (model / "model.keras").is_file() and (model / "flags.txt").is_file()
    metrics = json.load(open(report / "metrics.json"))
    manifest = json.load(open(records / "manifest.json"))
    assert metrics["count"] == manifest["counts"]["test"]["total"]
    assert 0 <= metrics["accuracy"] <= 1 and 0 < metrics["threshold"] < 1 and metrics["loss"] > 0
    rows = list(csv.DictReader(open(report / "predictions.csv")))
    assert len(rows) == metrics["count"]

    predicted = run("cxr_fast.predict", f"--model={model}", os.path.join(images, "chest_xray", "test"))
    assert predicted.returncode == 0 and json.loads(predicted.stdout.splitlines()[0])["label"] in ("NORMAL",
                                                                                                   "PNEUMONIA")
