"""The training command line: killed mid-epoch and resumed, it ends as the uninterrupted run from its
flags.txt does (same weights, same history); bad flags."""
import json
import os
import subprocess
import sys

import pytest

from cli import ROOT, assert_one_line_error, run
from conftest import convert, make_synthetic

pytestmark = pytest.mark.heavy(75)  # ~seconds here; scheduled first (tests/conftest.py)

TINY = ["--backbone=tiny", "--image_size=32", "--weights=none", "--batch_size=16", "--epochs=2",
        "--steps_per_epoch=6", "--checkpoint_every_secs=0"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    convert(make_synthetic(root / "images", num_patients=40, seed=6), root / "records", image_size=32)
    return str(root / "records")


def test_killed_mid_epoch_resumes_and_ends_after_the_same_epochs(records, tmp_path):
    model_dir = tmp_path / "run"
    # A low ramp gate, so the augmentation's ramp starts after epoch 1 and the kill falls inside
    # it: the resumed run must restore the ramp's start (from the history) as well as the step.
    command = [sys.executable, "-m", "cxr_fast.train", f"--data_dir={records}", f"--model_dir={model_dir}", *TINY,
               "--augment_ramp_start_auc=0.05"]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed, ramp_started = False, False
    for line in process.stdout:
        ramp_started = ramp_started or "ranges ramp to full" in line
        if "checkpoint saved at epoch 2, step 3" in line:
            process.kill()  # SIGKILL: no handler, no cleanup, as a preempted machine
            killed = True
            break
    process.wait(timeout=120)
    assert killed, "the run never reported its mid-epoch checkpoint"
    assert ramp_started, "the augmentation ramp did not start after epoch 1"
    assert not (model_dir / "model.keras").exists()

    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at epoch 2, step 3" in resumed.stdout
    history = json.load(open(model_dir / "history.json"))
    assert [h["epoch"] for h in history] == [1, 2]
    assert json.load(open(model_dir / "summary.json"))["epochs_trained"] == 2
    assert (model_dir / "model.keras").is_file()

    flags_text = open(model_dir / "flags.txt").read()
    assert "--backbone=tiny" in flags_text and f"--model_dir={model_dir}" in flags_text
    # The uninterrupted run, reproduced from flags.txt: exact resume means the same weights and history.
    again = run("cxr_fast.train", f"--flagfile={model_dir / 'flags.txt'}", f"--model_dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    summaries = [json.load(open(d / "summary.json")) for d in (model_dir, tmp_path / "again")]
    assert summaries[0]["weights_sha256"] == summaries[1]["weights_sha256"]
    histories = [json.load(open(d / "history.json")) for d in (model_dir, tmp_path / "again")]
    for resumed_epoch, uninterrupted_epoch in zip(*histories):
        for key in ("loss", "accuracy", "val_loss", "val_auc", "learning_rate", "augment_strength"):
            assert resumed_epoch[key] == pytest.approx(uninterrupted_epoch[key], rel=1e-6), key


def test_bad_flags_are_one_clear_line(records, tmp_path):
    enum = run("cxr_fast.train", f"--data_dir={records}", f"--model_dir={tmp_path / 'a'}", "--backbone=B9")
    assert enum.returncode != 0 and "Traceback" not in enum.stderr and "--backbone" in enum.stderr
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={tmp_path / 'nothing'}", f"--model_dir={tmp_path / 'b'}",
                              *TINY), "manifest.json not found")
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={records}", f"--model_dir={tmp_path / 'c'}",
                              "--backbone=B0", "--image_size=32", f"--weights={tmp_path / 'absent.h5'}"),
                          "--weights", "no such file")
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={records}", f"--model_dir={tmp_path / 'd'}", *TINY,
                              "--batch_size=100000"), "--batch_size")
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={records}", f"--model_dir={tmp_path / 'e'}", *TINY,
                              "--head_dropout=half,0.2"), "--head_dropout=half,0.2", "must be numbers")
