"""Strategy, precision and XLA choices on this (CPU) machine, who writes, and a lost worker."""
import os
import re
import signal
import sys

import pytest
import tensorflow as tf

from cli import ROOT, Lines
from cxr_fast.distributed import cluster
from cxr_fast.distributed import strategy as strategy_lib
from cxr_fast.errors import InputError

pytestmark = pytest.mark.heavy(40)  # ~seconds here; scheduled first (tests/conftest.py)


def test_cpu_defaults_are_float32_without_xla():
    assert not tf.config.list_physical_devices("GPU")
    assert strategy_lib.choose_precision("auto") == "float32"
    assert strategy_lib.choose_jit("auto") is False
    assert strategy_lib.choose_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert strategy_lib.choose_jit("on") is True


def test_auto_strategy_is_one_device_and_chief():
    strategy = strategy_lib.make_strategy("auto")
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy_lib.is_chief(strategy)


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(InputError, match="TF_CONFIG"):
        strategy_lib.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InputError, match="TF_CONFIG is not valid JSON"):
        strategy_lib.make_strategy("multi_worker")


def test_collectives_are_nccl_between_gpus_and_ring_on_cpus_without_a_timeout_by_default():
    implementation = tf.distribute.experimental.CommunicationImplementation
    gpus, cpus = strategy_lib.communication_options(True), strategy_lib.communication_options(False)
    assert (gpus.implementation, cpus.implementation) == (implementation.NCCL, implementation.RING)
    assert gpus.timeout_seconds is None and cpus.timeout_seconds is None
    assert strategy_lib.communication_options(False, 30.0).timeout_seconds == 30.0


def test_write_dir_is_private_off_the_chief(tmp_path):
    chief = strategy_lib.WriteDir(str(tmp_path), chief=True)
    assert chief.path == str(tmp_path)
    worker = strategy_lib.WriteDir(str(tmp_path), chief=False)
    assert worker.path != str(tmp_path) and os.path.isdir(worker.path)
    worker.cleanup()
    chief.cleanup()
    assert not os.path.exists(worker.path) and os.path.isdir(tmp_path)


def test_lost_worker_messages_name_the_worker():
    heartbeats = ("Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are "
                  "unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.")
    assert strategy_lib._lost_worker(heartbeats).startswith("worker 1 stopped sending heartbeats")
    leader = ("Collective ops is aborted by: Failed to send RPC to coordination service. Either the leader task "
              "was preempted/died/restarted unexpectedly")
    assert "the chief (worker 0" in strategy_lib._lost_worker(leader)
    refused = ("Collective ops is aborted by: failed to connect to all addresses\nAdditional GRPC error information "
               "from remote target /job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf:")
    assert strategy_lib._lost_worker(refused).startswith("worker 1 cannot be reached")


def _train_command(records, model_dir, *flags):
    return [sys.executable, "-m", "cxr_fast.train", f"--data_dir={records}", f"--model_dir={model_dir}",
            "--strategy=multi_worker", "--backbone=tiny", "--image_size=32", "--weights=none", "--batch_size=8",
            "--augment=none", "--epochs=1", *flags]


def test_a_killed_worker_ends_the_other_with_one_line(records_dir, tmp_path):
    """SIGKILL worker 1 mid-epoch, default flags (no collective timeout): worker 0 notices through
    TensorFlow's heartbeats and exits with one clear line (workers on separate hosts, no launcher
    to stop it; the cluster started again resumes: tests/test_launch_local.py)."""
    model_dir = tmp_path / "run"
    env = {"PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = Lines()
    command = _train_command(records_dir, model_dir, "--steps_per_epoch=100000", "--checkpoint_every_secs=0")
    local = cluster.LocalCluster(command, 2, env=env, out=out, cwd=ROOT)
    try:
        out.wait_for("[worker 0] checkpoint saved at epoch 1, step 3", timeout=300)
        os.killpg(local.processes[1].pid, signal.SIGKILL)
        code = local.processes[0].wait(timeout=300)  # a hang guard, not a speed claim (heartbeats: ~11-13 s here)
    finally:
        local.stop()
    survivor = [line for line in out.getvalue().splitlines() if line.startswith("[worker 0]")]
    errors = [line for line in survivor if ": error: " in line]
    assert code == 1, code
    assert len(errors) == 1 and re.search("the cluster lost a worker: worker 1 (stopped sending heartbeats|cannot be "
                                          "reached)", errors[0]), errors
    assert not any("Traceback" in line for line in survivor)

