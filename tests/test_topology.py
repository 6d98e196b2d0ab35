"""The user's commands on the user's topology: `cxr_fast.train` with DEFAULT flags (only --weights=none
and small sizes forced) on 1 and 4 replicas in one process (CXR_FAST_CPU_DEVICES: the CPU split
as one 1- or 4-GPU host; on 4, two record sets trained as one), killed mid-epoch by SIGKILL and
resumed, against its uninterrupted twin from flags.txt; then `evaluate` and `export` on the same
topology.  The two-worker twin of this is in
tests/test_launch_local.py."""
import json
import os
import subprocess
import sys

import pytest

from cli import ROOT, assert_one_line_error, run, start_until
from cxr_fast import topology
from cxr_fast.errors import InputError

pytestmark = pytest.mark.heavy(110)  # ~seconds here; scheduled first (tests/conftest.py)

# Small sizes only; everything else is cxr_fast.train's default (reference augmentation with its
# gated ramp, precise BatchNorm, balanced class weights, --sync_batchnorm=auto, --strategy=auto).
SMALL = ["--backbone=tiny", "--weights=none", "--image_size=32", "--batch_size=16", "--epochs=2",
         "--checkpoint_every_secs=0"]


def _env(devices):
    return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CXR_FAST_CPU_DEVICES=str(devices))


def _json(path):
    with open(path) as f:
        return json.load(f)


# One device on one record set, and a 4-GPU host on two record sets trained as one (Kermany's
# binary set with an NIH stand-in: 15 aligned findings, Kermany's films masked on 14); one set on
# 2 replicas per process runs through the same command in tests/test_launch_local.py (2 workers x 2
# replicas), and the pipeline tests read 1, 2, 4 and 8 replicas.
@pytest.mark.parametrize("replicas", [1, 4])
def test_train_killed_resumed_evaluated_exported(replicas, records_dir, labelled_records, tmp_path):
    env = _env(replicas)
    model_dir = tmp_path / "run"
    data_dir = records_dir if replicas == 1 else f"{records_dir},{labelled_records('nih')[1]}"
    strategy = [] if replicas == 1 else ["--strategy=mirrored"]  # what auto picks on a host of several GPUs
    command = [sys.executable, "-m", "cxr_fast.train", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
               *SMALL, *strategy]
    process, first = start_until(command, "checkpoint saved at epoch 2, step 1", {topology.ENV: str(replicas)})
    process.kill()  # SIGKILL: no handler runs, as on a preempted machine
    process.wait(timeout=60)
    assert f"with {replicas} replicas" in first
    assert ("BatchNorm statistics synchronized" in first) == (replicas > 1)  # 16 / R < 16 images per replica
    assert not (model_dir / "model.keras").exists()

    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming at epoch 2, step 1" in resumed.stdout
    twin = run("cxr_fast.train", f"--flagfile={model_dir / 'flags.txt'}", f"--model_dir={tmp_path / 'twin'}",
               env={"CXR_FAST_CPU_DEVICES": str(replicas)})
    assert twin.returncode == 0, twin.stderr[-3000:]
    histories = [_json(d / "history.json") for d in (model_dir, tmp_path / "twin")]
    assert [h["epoch"] for h in histories[0]] == [h["epoch"] for h in histories[1]] == [1, 2]
    for mine, theirs in zip(*histories):
        for key in ("loss", "accuracy", "val_loss", "val_auc", "learning_rate", "augment_strength"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), (key, mine, theirs)
    if replicas == 1:  # one device: the resumed run ends with the very weights of its twin
        assert (_json(model_dir / "summary.json")["weights_sha256"]
                == _json(tmp_path / "twin" / "summary.json")["weights_sha256"])
        return  # evaluate and export on one device: tests/evaluation/test_scoring.py, tests/serving

    evaluated = run("cxr_fast.evaluate", f"--model_dir={model_dir}", f"--data_dir={records_dir}",
                    env={"CXR_FAST_CPU_DEVICES": str(replicas)})
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = _json(model_dir / "eval_test" / "metrics.json")  # one of its two sets: scored on Pneumonia
    assert metrics["count"] == _json(os.path.join(records_dir, "manifest.json"))["counts"]["test"]["total"]
    assert metrics["scored_findings"] == ["Pneumonia"] and metrics["external"] is False
    exported = run("cxr_fast.export", f"--model={model_dir}", f"--export_dir={tmp_path / 'serving' / '1'}",
                   env={"CXR_FAST_CPU_DEVICES": str(replicas)})
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "serving" / "1" / "saved_model.pb").is_file()


def test_deterministic_run_on_two_replicas(records_dir, tmp_path):
    # TensorFlow's op determinism refuses some ops (tf.timestamp: the input-wait figure is dropped).
    result = run("cxr_fast.train", f"--data_dir={records_dir}", f"--model_dir={tmp_path / 'run'}", *SMALL,
                 "--epochs=1", "--strategy=mirrored", "--deterministic", env={"CXR_FAST_CPU_DEVICES": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with 2 replicas, precision float32, XLA off, op determinism on" in result.stdout
    assert "img/s" in result.stdout and "input wait" not in result.stdout
    assert _json(tmp_path / "run" / "summary.json")["epochs_trained"] == 1


def test_the_switch_is_read_once_and_checked():
    assert topology.cpu_devices({}) == 0 and topology.cpu_devices({topology.ENV: " 4 "}) == 4
    for bad in ("0", "-2", "four", "65"):
        with pytest.raises(InputError, match=topology.ENV):
            topology.cpu_devices({topology.ENV: bad})
    assert_one_line_error(run("cxr_fast.train", "--data_dir=x", "--model_dir=y", env={topology.ENV: "many"}),
                          topology.ENV)
