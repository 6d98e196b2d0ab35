"""Prediction on new files (good, corrupt, non-image), Grad-CAM, and the export training writes."""
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cli import run
from cxr_fast.data import imaging
from cxr_fast.serving import gradcam, inference
from cxr_fast.tasks import task as task_lib

BINARY = task_lib.create((), ("NORMAL", "PNEUMONIA"))

pytestmark = pytest.mark.heavy(50)  # ~seconds here; scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def files(synthetic_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    good = sorted(glob.glob(os.path.join(synthetic_dir, "chest_xray/test/*/*.jpeg")))[:3]
    data = open(good[0], "rb").read()
    (folder / "corrupt.jpeg").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not an image")
    return good, str(folder / "corrupt.jpeg"), str(folder / "notes.txt")


def test_classify_scores_good_files_and_reports_bad_ones(tiny_model_dir, files):
    good, corrupt, text = files
    model, threshold = inference.load(tiny_model_dir)
    results = inference.classify(model, threshold, [good[0], corrupt, text, good[1]], inference.task_of(tiny_model_dir))
    assert [("error" in r) for r in results] == [False, True, True, False]
    assert results[1]["error"].startswith("truncated") and results[2]["error"].startswith("unreadable")
    assert 0 <= results[0]["probability"] <= 1 and results[0]["label"] in ("NORMAL", "PNEUMONIA")
    expected = model.predict_on_batch(imaging.load_gray(open(good[0], "rb").read(), 32)[None, ..., None])
    assert results[0]["probability"] == pytest.approx(float(expected.ravel()[0]), abs=1e-6)
    # Class names come from the training folder's config.json (the record set's), Kermany's without one.
    assert inference.task_of(tiny_model_dir).classes == ("NORMAL", "PNEUMONIA")
    assert inference.task_of(good[0]).classes == ("NORMAL", "PNEUMONIA") and inference.task_of(good[0]).findings == ()


def test_files_are_read_a_batch_at_a_time(tiny_model_dir, files, tmp_path):
    # Memory flat in the number of files: a file is not opened before its batch is scored, so the
    # files of later batches, removed after the first batch's results came back, are not found.
    good = files[0]
    copies = []
    for index in range(6):
        copies.append(tmp_path / f"film{index}.jpeg")
        copies[-1].write_bytes(open(good[index % len(good)], "rb").read())
    model, threshold = inference.load(tiny_model_dir)
    results = inference.stream(model, threshold, [str(c) for c in copies], inference.task_of(tiny_model_dir),
                               batch_size=2)
    first = [next(results), next(results)]
    for later in copies[2:]:
        later.unlink()
    rest = list(results)
    assert [("error" in r) for r in first + rest] == [False, False, True, True, True, True]
    assert all(r["error"].startswith("unreadable") for r in rest)


def test_oversized_image_is_refused(tiny_model_dir, files):
    model, threshold = inference.load(tiny_model_dir)
    result = inference.classify(model, threshold, [files[0][0]], inference.task_of(tiny_model_dir), max_pixels=100)[0]
    assert result["error"].startswith("too_large")


def test_gradcam_has_the_image_size_and_is_not_constant(files):
    # 96 px: B0's last block is then 3x3 (at 32 px it is a single cell, and any map is flat).
    from cxr_fast.training import model as model_lib
    from cxr_fast.config import ModelConfig

    model, _ = model_lib.build_model(ModelConfig(backbone="B0", image_size=96, weights="none"))
    batch = np.stack([imaging.load_gray(open(f, "rb").read(), 96) for f in files[0]])[..., None]
    maps = gradcam.heatmaps(model, batch)
    assert maps.shape == (3, 96, 96) and maps.min() >= 0 and maps.max() <= 1.0
    assert all(m.std() > 0 for m in maps)


def test_gradcam_per_finding_of_a_multilabel_model(files, tmp_path):
    # Each finding found gets its own map (the gradient of that finding's probability).
    from cxr_fast.training import model as model_lib
    from cxr_fast.config import ModelConfig

    findings = ("Effusion", "Mass", "Nodule")
    model, _ = model_lib.build_model(ModelConfig(backbone="B0", image_size=96, weights="none", findings=findings))
    batch = np.stack([imaging.load_gray(open(f, "rb").read(), 96) for f in files[0]])[..., None]
    maps = [gradcam.heatmaps(model, batch, k) for k in range(3)]
    assert all(m.shape == (3, 96, 96) for m in maps) and not np.allclose(maps[0], maps[1], atol=1e-3)
    probs = model.predict_on_batch(batch)
    thresholds = [float(probs[:, 0].min()), 2.0, float(probs[:, 2].max())]  # all, none, the top image only
    results = inference.classify(model, thresholds, files[0], task_lib.create(findings), gradcam_dir=str(tmp_path))
    top = int(np.argmax(probs[:, 2]))
    for i, result in enumerate(results):
        expected = ["Effusion"] + (["Nodule"] if i == top else [])
        assert result["findings"] == expected and sorted(result["gradcam"]) == sorted(expected)
        for name, path in result["gradcam"].items():
            assert path.endswith(f".{name}.gradcam.png") and Image.open(path).size == Image.open(files[0][i]).size


def test_cli_jsonl_overlays_and_exit_code(tiny_model_dir, files, tmp_path):
    good, corrupt, text = files
    result = run("cxr_fast.predict", f"--model={tiny_model_dir}", f"--gradcam_dir={tmp_path / 'cams'}", good[0],
                 corrupt, text, good[1])
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["file"] for line in lines] == [good[0], corrupt, text, good[1]]
    overlay = Image.open(lines[0]["gradcam"])
    assert overlay.size == Image.open(good[0]).size and overlay.mode == "RGB"
    assert "2 of 4 files could not be classified" in result.stderr
    ok = run("cxr_fast.predict", f"--model={tiny_model_dir}", os.path.dirname(good[0]))
    assert ok.returncode == 0 and len(ok.stdout.strip().splitlines()) >= 1


def test_training_export_matches_keras(tiny_model_dir, files):
    export_dir = os.path.join(os.path.dirname(tiny_model_dir), "export")  # written by --export_dir at training
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    model, threshold = inference.load(tiny_model_dir)
    good = files[0]
    same_size = []
    for path in good:  # at the model's size: no resize, so the two must agree exactly
        buffer = io.BytesIO()
        Image.fromarray(imaging.load_gray(open(path, "rb").read(), 32)).save(buffer, format="PNG")
        same_size.append(buffer.getvalue())
    out = served(images=tf.constant(same_size))
    expected = model.predict_on_batch(np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in same_size])[..., None])
    np.testing.assert_allclose(out["probability"].numpy(), expected.ravel(), atol=1e-5)
    assert out["error"].numpy().tolist() == [b""] * 3
    full = served(images=tf.constant([open(p, "rb").read() for p in good]))  # full-size JPEGs: resize filters differ
    keras_full = [r["probability"] for r in inference.classify(model, threshold, good, BINARY)]
    np.testing.assert_allclose(full["probability"].numpy(), keras_full, atol=0.02)
    assert set(full["class"].numpy().tolist()) <= {b"NORMAL", b"PNEUMONIA"}
