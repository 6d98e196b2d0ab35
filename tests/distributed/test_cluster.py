"""The local cluster launcher's process handling, on small Python workers (no TensorFlow)."""
import json
import os
import sys

import pytest

from cli import ROOT, Lines, alive, started_pids
from cxr_fast.distributed import cluster
from cxr_fast.errors import InputError

# Prints its index, records its pid and its child's; worker 1 fails after a delay, the rest sleep.
WORKER = os.path.join(ROOT, "tests", "helpers", "sleep_worker.py")


def test_free_ports_are_distinct_and_bindable():
    ports = cluster.free_ports(4)
    assert len(set(ports)) == 4 and all(1024 <= p < 65536 for p in ports)


def test_tf_config_names_the_cluster_and_the_task():
    config = json.loads(cluster.tf_config(["127.0.0.1:1", "127.0.0.1:2"], 1))
    assert config == {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}


def test_one_failing_worker_stops_the_others_and_their_children(tmp_path):
    out = Lines()
    local = cluster.LocalCluster([sys.executable, WORKER, str(tmp_path), "1"], 3, out=out, grace_secs=5)
    pids = started_pids(tmp_path, 3)
    assert local.wait() == 3
    assert not [pid for pid in pids if alive(pid)]
    text = out.getvalue()
    for index in range(3):
        assert f"[worker {index}] hello from {index}" in text
    assert "[launcher] worker 1 exited with code 3; stopping the others" in text


def test_all_workers_succeeding_exit_zero(tmp_path):
    out = Lines()
    command = [sys.executable, "-c", "import json, os; print(json.loads(os.environ['TF_CONFIG'])['task'])"]
    assert cluster.LocalCluster(command, 2, out=out).wait() == 0
    assert "[worker 1] {'type': 'worker', 'index': 1}" in out.getvalue()


def test_stop_ends_every_worker(tmp_path):
    local = cluster.LocalCluster([sys.executable, WORKER, str(tmp_path), "600"], 2, out=Lines(), grace_secs=2)
    pids = started_pids(tmp_path, 2)
    local.stop()
    assert not [pid for pid in pids if alive(pid)]


def test_visible_gpus_from_the_environment():
    assert cluster.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3,5"}) == ["2", "3", "5"]
    assert cluster.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert cluster.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_gpus_are_split_evenly_by_default():
    eight = [str(i) for i in range(8)]
    assert cluster.gpu_environments(2, eight) == [{"CUDA_VISIBLE_DEVICES": "0,1,2,3"},
                                                  {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}]
    assert cluster.gpu_environments(3, eight) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"},
                                                  {"CUDA_VISIBLE_DEVICES": "4,5"}]
    assert cluster.gpu_environments(2, ["4", "7"]) == [{"CUDA_VISIBLE_DEVICES": "4"}, {"CUDA_VISIBLE_DEVICES": "7"}]
    assert cluster.gpu_environments(2, eight, gpus_per_worker=1) == [{"CUDA_VISIBLE_DEVICES": "0"},
                                                                     {"CUDA_VISIBLE_DEVICES": "1"}]
    assert cluster.gpu_environments(2, []) == [{}, {}]  # CPU machine: nothing to assign
    assert cluster.gpu_environments(2, [], gpus_per_worker=2)[1] == {"CUDA_VISIBLE_DEVICES": "2,3"}


def test_more_workers_than_gpus_needs_sharing():
    with pytest.raises(InputError, match=r"--num_workers=3 .* needs 3 GPUs, but 2 are visible .*--share_gpus"):
        cluster.gpu_environments(3, ["0", "1"])
    with pytest.raises(InputError, match="needs 8 GPUs"):
        cluster.gpu_environments(2, ["0", "1"], gpus_per_worker=4)
    shared = cluster.gpu_environments(3, ["0", "1"], share=True)
    assert shared == [{"CUDA_VISIBLE_DEVICES": "0,1", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}] * 3
