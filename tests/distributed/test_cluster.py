"""The local cluster launcher's process handling, on small Python workers (no TensorFlow)."""
import json
import os
import sys
import time

from cli import ROOT, Lines, alive, started_pids
from cxr_fast.distributed import cluster

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
    start = time.time()
    assert local.wait() == 3
    assert time.time() - start < 15
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
