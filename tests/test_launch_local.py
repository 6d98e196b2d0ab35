"""`python -m tools.launch_local`: two workers on 127.0.0.1 train as one process would.

The comparison with one process is exact in what each step sees: the record set has two train
shards of equal size and the global batch is the whole train split, so both runs take the
same full-batch steps; the backbone is frozen (BatchNorm in inference mode) and the head's
dropout off, so only the order of floating-point sums differs.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cli import ROOT, alive, assert_one_line_error, run, start_until, started_pids
from conftest import convert, make_synthetic
from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from cxr_fast.training import loop

pytestmark = pytest.mark.heavy(150)  # ~seconds here; scheduled first (tests/conftest.py)

HELPERS = os.path.join(ROOT, "tests", "helpers")


@pytest.fixture(scope="module")
def even_records(tmp_path_factory):
    """Records with two train shards of equal count; returns (path, train count, val count)."""
    root = tmp_path_factory.mktemp("even")
    manifest = convert(make_synthetic(root / "images", num_patients=60), root / "records", min_shards=2)
    train = [s["records"] for s in manifest["shards"] if s["split"] == "train"]
    assert len(train) == 2 and train[0] == train[1], f"the test needs two train shards of equal size, got {train}"
    return str(root / "records"), sum(train), manifest["counts"]["val"]["total"]


def _history(model_dir):
    with open(os.path.join(model_dir, "history.json")) as f:
        return json.load(f)


def _processes_mentioning(text):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read() and alive(int(pid)):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_two_workers_end_identical_and_match_one_process(even_records, tmp_path):
    records, train_count, val_count = even_records
    settings = dict(backbone="tiny", image_size=32, weights="none", freeze_fraction=1.0, head_dropout=(0.0, 0.0))
    flags = [f"--data_dir={records}", f"--batch_size={train_count}", "--epochs=3", "--steps_per_epoch=2",
             "--augment=none", "--class_weight=none", "--learning_rate=3e-3", "--head_dropout=0,0",
             *(f"--{k}={v}" for k, v in settings.items() if k != "head_dropout")]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    two = tmp_path / "two"
    result = run("tools.launch_local", "--num_workers=2", "--", *flags, f"--model_dir={two}",
                 env={"TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stdout[-4000:]
    fingerprints = [re.search(rf"\[worker {i}\] weights sha256 (\w+)", result.stdout) for i in (0, 1)]
    assert all(fingerprints), result.stdout[-3000:]
    assert fingerprints[0].group(1) == fingerprints[1].group(1)  # identical weights on both workers
    with open(two / "summary.json") as f:
        assert json.load(f)["weights_sha256"] == fingerprints[0].group(1)
    assert not [p for p in scratch.iterdir() if p.name.startswith("cxr_fast_worker_")]  # worker 1's folder removed
    assert not _processes_mentioning(str(two))  # the launcher left nothing running
    history = _history(two)
    assert len(history) == 3 and all(h["val_count"] == val_count for h in history)  # every val record, once

    one = tmp_path / "one"
    config = TrainConfig(model_dir=str(one), data=DataConfig(data_dir=records, image_size=32,
                                                             global_batch_size=train_count),
                         model=ModelConfig(**settings), augment=AugmentConfig(kind="none"), epochs=3,
                         steps_per_epoch=2, class_weight="none", learning_rate=3e-3, strategy="one_device")
    loop.train_and_evaluate(config, log=lambda *_: None)
    reference = _history(one)
    # Adam turns gradients that differ only by rounding, where they are ~0, into full-size steps
    # (this frozen random backbone makes many such), so the runs drift apart slowly: they must
    # agree to a small fraction of what training changed (seen here: 5% of it at most).
    learned = reference[0]["loss"] - reference[-1]["loss"]
    assert learned > 5e-3, reference
    for mine, theirs in zip(history, reference):
        for key in ("loss", "val_loss"):
            assert abs(mine[key] - theirs[key]) < 0.15 * learned, (key, mine, theirs)


def test_two_workers_of_two_replicas_killed_resumed_evaluated_exported(records_dir, tmp_path):
    """Two hosts of two GPUs each, as two workers of two logical CPUs: default flags (small sizes and
    --weights=none forced), worker 1 SIGKILLed mid-epoch (the launcher stops the other), the cluster
    started again resumes and ends as its uninterrupted twin; the chief's model evaluates and exports."""
    env = {"CXR_FAST_CPU_DEVICES": "2"}
    flags = [f"--data_dir={records_dir}", "--backbone=tiny", "--weights=none", "--image_size=32", "--batch_size=16",
             "--epochs=2", "--checkpoint_every_secs=0"]
    model_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tools.launch_local", "--num_workers=2", "--", *flags, f"--model_dir={model_dir}"]
    launcher, text = start_until(command, "[worker 0] checkpoint saved at epoch 2, step 1", env)
    workers = [pid for pid in _processes_mentioning(str(model_dir))
               if pid != launcher.pid and "tools.launch_local" not in open(f"/proc/{pid}/cmdline").read()]
    os.kill(max(workers), signal.SIGKILL)  # the worker started last: worker 1
    assert launcher.wait(timeout=120) != 0, text[-3000:]
    assert "[worker 0] strategy CollectiveAllReduceStrategy with 4 replicas" in text, text[-3000:]
    assert "BatchNorm statistics synchronized over the 4 replicas" in text  # 4 images per replica
    assert not (model_dir / "model.keras").exists()

    resumed = run("tools.launch_local", "--num_workers=2", "--", *flags, f"--model_dir={model_dir}", env=env)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert all(f"[worker {i}] resuming at epoch 2, step 1" in resumed.stdout for i in (0, 1)), resumed.stdout[-3000:]
    twin = run("tools.launch_local", "--num_workers=2", "--", *flags, f"--model_dir={tmp_path / 'twin'}", env=env)
    assert twin.returncode == 0, twin.stdout[-4000:]
    for mine, theirs in zip(_history(model_dir), _history(tmp_path / "twin"), strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_auc", "learning_rate", "augment_strength"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), (key, mine, theirs)

    evaluated = run("cxr_fast.evaluate", f"--model_dir={model_dir}", f"--data_dir={records_dir}", env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    exported = run("cxr_fast.export", f"--model={model_dir}", f"--export_dir={tmp_path / 'serving'}", env=env)
    assert exported.returncode == 0 and (tmp_path / "serving" / "saved_model.pb").is_file(), exported.stderr[-3000:]


def test_sigterm_to_the_launcher_stops_every_worker_each_with_its_gpus(tmp_path):
    # Four GPUs visible to the launcher (faked): by default each of the two workers gets two.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HELPERS]), CUDA_VISIBLE_DEVICES="0,1,2,3")
    launcher = subprocess.Popen([sys.executable, "-m", "tools.launch_local", "--num_workers=2", "--module=sleep_worker",
                                 "--", str(tmp_path), "600"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids = started_pids(tmp_path, 2)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    assert not [pid for pid in pids if alive(pid)]
    output = launcher.stdout.read()
    assert "[worker 0] hello from 0 gpus 0,1" in output and "[worker 1] hello from 1 gpus 2,3" in output


def test_bad_launcher_flags_are_one_line_errors():
    assert_one_line_error(run("tools.launch_local", "--num_workers=0"), "--num_workers=0")
    assert_one_line_error(run("tools.launch_local", "--gpus_per_worker=-1"), "--gpus_per_worker")
    assert_one_line_error(run("tools.launch_local", "--num_workers=2", env={"CUDA_VISIBLE_DEVICES": "0"}),
                          "--num_workers=2", "1 are visible", "--share_gpus")


def test_a_worker_failing_on_bad_flags_ends_the_launch_with_its_code(tmp_path):
    result = run("tools.launch_local", "--num_workers=2", "--", f"--data_dir={tmp_path}/missing",
                 f"--model_dir={tmp_path}/run", "--weights=none")
    assert result.returncode == 2
    assert re.search(r"\[worker [01]\] train.py: error: .*missing", result.stdout), result.stdout[-2000:]
