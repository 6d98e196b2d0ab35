"""A folder an attacker (or a damaged disk) filled, through the user's commands with default flags:
the converter and `predict` refuse each hostile file with its reason, before the work it would
cost, in bounded memory; nothing hangs.  (The SavedModel's own: tests/serving/test_savedmodel.py.)

Unguarded, these files cost: the deflated DICOM 2 GB, the 100-frame DICOM 1.6 GB, the embedded
20000x20000 frame 400 MB and more, the sparse file 1 GB, /dev/zero and the FIFO forever, the
progressive JPEG 33 s of decoding.  The memory bound is on what the hostile files add to the
same command's peak on the same films without them: a decoded 4096x4096 film fits, a bomb not."""
import json
import os
import subprocess
import sys

import pytest

from cli import ROOT
from conftest import make_synthetic
from hostile import (deflated_dicom, dicom_embedding, dicom_frames, jpeg, jpeg_declaring, jpeg_fake_frame,
                     png_bomb, progressive_jpeg)

pytestmark = pytest.mark.heavy(30)

ADDED_MB = 300  # the 100-frame film's first frame, 4096x4096, in float32: 64 MB

HOSTILE = {  # file name -> the reason code it is refused with
    "png_bomb.png": "too_large",
    "declares_60000.jpeg": "too_large",
    "ff00_before_real_frame.jpeg": "too_large",
    "progressive_20000_scans.jpeg": "too_large",
    "truncated.jpeg": "truncated",
    "garbage.jpeg": "unreadable",
    "empty.jpeg": "unreadable",
    "deflated_2gb.dcm": "too_large",
    "embedded_20000.dcm": "unreadable",
    "fifo.jpeg": "unreadable",
    "dev_zero.png": "unreadable",
    "sparse_1gb.png": "too_large",
}
FRAMES = "frames_100x4096.dcm"  # a legitimate film: its first frame is converted


def _write_hostile(folder):
    contents = {
        "png_bomb.png": png_bomb(16000, 16000),
        "declares_60000.jpeg": jpeg_declaring(60000, 60000),
        "ff00_before_real_frame.jpeg": jpeg_fake_frame(23000, 23000),
        "progressive_20000_scans.jpeg": progressive_jpeg(20000, 2048, 2048),
        "truncated.jpeg": jpeg(300, 200)[:2000],
        "garbage.jpeg": os.urandom(5000),
        "empty.jpeg": b"",
        "deflated_2gb.dcm": deflated_dicom(2 << 30),
        "embedded_20000.dcm": dicom_embedding(jpeg_declaring(20000, 20000)),
        FRAMES: dicom_frames(100, 4096),
    }
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "fifo.jpeg")
    (folder / "dev_zero.png").symlink_to("/dev/zero")
    with open(folder / "sparse_1gb.png", "wb") as f:
        f.truncate(1 << 30)


@pytest.fixture(scope="module")
def hostile_data(tmp_path_factory):
    """Two copies of a small Kermany-layout set: (plain, hostile, the hostile copy's folder of
    hostile files among PNEUMONIA films)."""
    root = tmp_path_factory.mktemp("hostile")
    plain, data = (make_synthetic(root / name, num_patients=12) for name in ("plain", "data"))
    folder = next((root / "data").glob("**/PNEUMONIA"))
    _write_hostile(folder)
    return plain, data, folder


_MEASURED = """
import resource, subprocess, sys
code = subprocess.call([sys.executable, "-m"] + sys.argv[1:])
print("peak_kb", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _run_measured(module, *args):
    """(completed process, peak resident MB of the command or any worker it started), from a
    wrapper process whose only children are the command and its workers."""
    result = subprocess.run([sys.executable, "-c", _MEASURED, module, *map(str, args)], cwd=ROOT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=600)  # a hang guard: the FIFO hung the converter
    *rest, peak = result.stderr.rstrip().splitlines()
    result.stderr = "\n".join(rest)
    return result, int(peak.split()[1]) / 1024


def test_the_converter_refuses_each_hostile_file_with_its_reason_in_bounded_memory(hostile_data, tmp_path):
    plain, data, folder = hostile_data
    out = tmp_path / "records"
    result, peak_mb = _run_measured("tools.make_tfrecords", f"--data_dir={data}", f"--output_dir={out}",
                                    "--image_size=64")
    assert result.returncode == 0, result.stderr[-3000:]
    baseline = _run_measured("tools.make_tfrecords", f"--data_dir={plain}", f"--output_dir={tmp_path / 'plain'}",
                             "--image_size=64")[1]
    manifest = json.load(open(out / "manifest.json"))
    reasons = {os.path.basename(s["file"]): s["reason"] for s in manifest["skipped"]}
    for name, code in HOSTILE.items():
        assert reasons.get(name, "").startswith(code + ":"), (name, reasons.get(name))
    assert FRAMES not in reasons
    assert peak_mb - baseline < ADDED_MB, (peak_mb, baseline)


def test_predict_answers_each_hostile_file_with_its_error_in_bounded_memory(hostile_data, tmp_path):
    from cxr_fast.config import ModelConfig
    from cxr_fast.training import model as model_lib

    plain, _, folder = hostile_data
    model, _ = model_lib.build_model(ModelConfig(backbone="tiny", image_size=32, weights="none"))
    model.save(str(tmp_path / "model.keras"))
    result, peak_mb = _run_measured("cxr_fast.predict", f"--model={tmp_path / 'model.keras'}", folder)
    assert result.returncode == 1 and "could not be classified" in result.stderr, result.stderr[-3000:]
    answers = {os.path.basename(r["file"]): r for r in map(json.loads, result.stdout.splitlines())}
    for name, code in HOSTILE.items():
        assert answers[name].get("error", "").startswith(code + ":"), (name, answers[name])
    assert 0 <= answers[FRAMES]["probability"] <= 1
    baseline = _run_measured("cxr_fast.predict", f"--model={tmp_path / 'model.keras'}", plain)[1]
    assert peak_mb - baseline < ADDED_MB, (peak_mb, baseline)
