"""The exported SavedModel's defences: a per-image error, never a failed request nor a decoded
bomb, for bytes from an attacker; limits fixed at export.  (That a trained model's export gives
the Keras model's probabilities is tests/serving/test_inference.py's.)"""
import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cli import run
from cxr_fast.data import imaging
from cxr_fast.errors import InputError
from cxr_fast.serving import inference, savedmodel
from cxr_fast.tasks import task as task_lib
from hostile import cmyk_jpeg, jpeg, jpeg_declaring, jpeg_fake_frame, png16, png_bomb, progressive_jpeg

pytestmark = pytest.mark.heavy(40)  # ~seconds here; scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def good(synthetic_dir):
    return sorted(glob.glob(os.path.join(synthetic_dir, "chest_xray/test/*/*.jpeg")))[:3]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained tiny CNN saved as training saves it: what is served does not matter here."""
    from cxr_fast.config import ModelConfig
    from cxr_fast.training import model as model_lib

    model, _ = model_lib.build_model(ModelConfig(backbone="tiny", image_size=32, weights="none"))
    path = str(tmp_path_factory.mktemp("serving") / inference.FINAL_MODEL)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def export_dir(model_file):
    model, threshold = inference.load(model_file)
    return savedmodel.export(model, os.path.join(os.path.dirname(model_file), "export"), threshold)


@pytest.fixture(scope="module")
def served(export_dir):
    return tf.saved_model.load(export_dir).signatures["serving_default"]


def test_bad_inputs_get_their_own_error_and_the_good_ones_an_answer(served, good):
    first = open(good[0], "rb").read()
    batch = {
        "good": first,
        "png bomb": png_bomb(16000, 16000),
        "jpeg declaring 60000x60000": jpeg_declaring(60000, 60000),
        "truncated jpeg": first[:len(first) // 2],
        "truncated png": png16()[:200],
        "text": b"I am not an image",
        "empty": b"",
        "16-bit png": png16(),
        "progressive, 20000 scans": progressive_jpeg(20000, 2048, 2048),
        "ff00 before the real frame": jpeg_fake_frame(23000, 23000),
        "cmyk jpeg": cmyk_jpeg(),
        "good again": open(good[1], "rb").read(),
    }
    out = served(images=tf.constant(list(batch.values())))
    errors = dict(zip(batch, (e.decode() for e in out["error"].numpy())))
    probability = dict(zip(batch, out["probability"].numpy()))
    assert errors["png bomb"].startswith("too large: the image declares 16000x16000 pixels")
    assert errors["jpeg declaring 60000x60000"].startswith("too large: the image declares 60000x60000 pixels")
    assert errors["truncated jpeg"] == errors["truncated png"] == "unreadable: the image data is truncated or corrupt"
    assert errors["text"] == errors["empty"] == "not an image: send JPEG or PNG bytes"
    assert errors["progressive, 20000 scans"].startswith("too large: a JPEG of 20000 scans, over the limit of 64")
    assert errors["ff00 before the real frame"].startswith("too large: the image declares 23000x23000 pixels")
    for name in ("good", "16-bit png", "cmyk jpeg", "good again"):
        assert errors[name] == "" and 0 <= probability[name] <= 1, name
    alone = served(images=tf.constant([batch["good"], batch["good again"]]))["probability"].numpy()
    np.testing.assert_allclose([probability["good"], probability["good again"]], alone, atol=1e-6)
    refused = [name for name, error in errors.items() if error]
    labels = dict(zip(batch, out["label"].numpy()))
    classes = dict(zip(batch, out["class"].numpy()))
    assert all(probability[n] == -1 and labels[n] == -1 and classes[n] == b"" for n in refused)
    assert served(images=tf.constant([], tf.string))["error"].shape == (0,)


def test_the_bomb_request_stays_within_its_memory_bound(export_dir, tmp_path):
    # In a fresh process (as a server would be): the peak resident memory the bomb request adds,
    # after a warm-up request with a good image. Decoded, the bomb alone needs 256 MB.  (Time is
    # bounded by what is refused before decoding: the test above.)
    (tmp_path / "bomb.png").write_bytes(png_bomb(16000, 16000))
    (tmp_path / "good.jpg").write_bytes(jpeg(300, 200))
    script = f"""
import json, tensorflow as tf
def peak_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
served = tf.saved_model.load({export_dir!r}).signatures["serving_default"]
good, bomb = open({str(tmp_path / 'good.jpg')!r}, "rb").read(), open({str(tmp_path / 'bomb.png')!r}, "rb").read()
for _ in range(3):
    served(images=tf.constant([good, good]))
before = peak_mb()
out = served(images=tf.constant([bomb, good]))
print(json.dumps({{"added_mb": peak_mb() - before, "errors": [e.decode() for e in out["error"].numpy()]}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["errors"][0].startswith("too large") and measured["errors"][1] == ""
    assert measured["added_mb"] < 50, measured


def test_limits_are_set_at_export_and_read_back(model_file, tmp_path):
    model, threshold = inference.load(model_file)
    path = savedmodel.export(model, str(tmp_path / "small"), threshold, max_pixels=100 * 100, max_bytes=50_000)
    loaded = tf.saved_model.load(path)
    assert int(loaded.max_image_pixels.numpy()) == 10_000 and int(loaded.max_image_bytes.numpy()) == 50_000
    out = loaded.signatures["serving_default"](images=tf.constant([jpeg(100, 100), jpeg(101, 100), bytes(60_000)]))
    errors = [e.decode() for e in out["error"].numpy()]
    assert errors[0] == "" and errors[1].startswith("too large: the image declares 100x101 pixels, over the limit of 10000")
    assert errors[2].startswith("too large: 60000 bytes, over the limit of 50000")


def test_export_cli_sets_limits_and_refuses_existing_dir(model_file, multilabel_dir, tmp_path):
    # A multi-label training folder: names from config.json, thresholds from threshold.json.
    result = run("cxr_fast.export", f"--model={multilabel_dir[0]}", f"--export_dir={tmp_path / 'out'}",
                 "--max_image_pixels=5000000", "--max_image_bytes=1000000")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "images (encoded bytes) -> probabilities and labels per finding (Atelectasis, Effusion, Pneumothorax)" \
        in result.stdout
    assert "at most 5000000 pixels and 1000000 bytes per image" in result.stdout
    loaded = tf.saved_model.load(str(tmp_path / "out"))  # the stored limits: test_limits_are_set_at_export...
    assert [n.decode() for n in loaded.finding_names.numpy()] == list(FINDINGS)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "keep.txt").write_text("x")
    result = run("cxr_fast.export", f"--model={model_file}", f"--export_dir={tmp_path / 'keep'}")
    assert result.returncode == 2 and "--export_dir" in result.stderr and "--overwrite" in result.stderr
    result = run("cxr_fast.export", f"--model={model_file}", f"--export_dir={tmp_path / 'x'}",
                 "--max_image_pixels=0")
    assert result.returncode == 2 and "--max_image_pixels" in result.stderr


FINDINGS = ("Atelectasis", "Effusion", "Pneumothorax")


@pytest.fixture(scope="module")
def multilabel_dir(tmp_path_factory):
    """An untrained 3-finding tiny CNN in a folder as training and `evaluate --threshold=auto` leave
    it: model.keras, config.json naming the findings, threshold.json with one threshold each."""
    from cxr_fast.config import ModelConfig
    from cxr_fast.training import model as model_lib

    model, _ = model_lib.build_model(ModelConfig(backbone="tiny", image_size=32, weights="none", findings=FINDINGS))
    folder = tmp_path_factory.mktemp("multilabel")
    model.save(str(folder / inference.FINAL_MODEL))
    (folder / "config.json").write_text(json.dumps({"model": {"findings": list(FINDINGS)}}))
    films = [imaging.encode(np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8), "png")
             for i in range(3)]
    expected = model.predict(np.stack([np.asarray(Image.open(io.BytesIO(f)))[..., None] for f in films]), verbose=0)
    thresholds = np.median(expected, axis=0).tolist()  # each finding's own: some films above it, some below
    (folder / inference.THRESHOLD_FILE).write_text(json.dumps({"threshold": thresholds}))
    return folder, films, expected


def test_multilabel_export_answers_per_finding_and_refuses_per_image(multilabel_dir, model_file, tmp_path):
    folder, films, expected = multilabel_dir
    model, threshold = inference.load(str(folder))
    assert threshold == np.median(expected, axis=0).tolist()
    with pytest.raises(InputError, match="2 finding names"):
        savedmodel.export(model, str(tmp_path / "wrong"), task=task_lib.create(FINDINGS[:2]))
    with pytest.raises(InputError, match="3 thresholds for a model of 1 outputs"):
        savedmodel.export(inference.load(model_file)[0], str(tmp_path / "wrong"), threshold)  # a binary model
    loaded = tf.saved_model.load(savedmodel.export(model, str(tmp_path / "ml"), threshold, task=task_lib.create(FINDINGS)))
    assert [n.decode() for n in loaded.finding_names.numpy()] == list(FINDINGS)
    out = loaded.signatures["serving_default"](images=tf.constant(films[:2] + [b"not an image"] + films[2:]))
    assert set(out) == {"probabilities", "labels", "findings", "error"}
    probabilities, labels = out["probabilities"].numpy(), out["labels"].numpy()
    answered = [0, 1, 3]
    np.testing.assert_allclose(probabilities[answered], expected, atol=1e-5)
    np.testing.assert_array_equal(labels[answered], (expected >= np.array(threshold)).astype(np.int32))
    joined = ["|".join(n for n, p, t in zip(FINDINGS, row, threshold) if p >= t) for row in expected]
    assert [out["findings"].numpy()[i].decode() for i in answered] == joined
    assert out["error"].numpy()[2].decode().startswith("not an image")
    assert (probabilities[2] == -1).all() and (labels[2] == -1).all() and out["findings"].numpy()[2] == b""


def test_decode_for_model_matches_pillow_on_same_size_jpeg():
    gray = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    data = imaging.encode(gray, "jpeg")
    ours = savedmodel.decode_for_model(tf.constant(data), 32).numpy()[..., 0]
    np.testing.assert_array_equal(ours, np.asarray(Image.open(io.BytesIO(data))))


def test_a_cmyk_jpeg_decodes_as_pillow_converts_it():
    data = cmyk_jpeg(32, 32)  # libjpeg cannot give gray from CMYK: decoded through RGB
    ours = savedmodel.decode_for_model(tf.constant(data), 32).numpy()[..., 0].astype(int)
    assert np.abs(ours - imaging.load_gray(data, 0).astype(int)).max() <= 1
