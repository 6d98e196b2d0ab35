"""tf.data service on 127.0.0.1: `tools.data_service` processes serve the training pipeline,
every element goes to exactly one consumer, the trainer runs on it, evaluation stays local."""
import collections
import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from cli import ROOT, Lines, assert_one_line_error, run
from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from cxr_fast.data import pipeline, recordset
from cxr_fast.distributed import cluster
from cxr_fast.distributed import service as data_service
from cxr_fast.errors import InputError
from cxr_fast.training import loop

pytestmark = pytest.mark.heavy(50)  # ~seconds here; scheduled first (tests/conftest.py)


class Service:
    """`python -m tools.data_service` processes, stopped with SIGTERM as a scheduler would."""

    def __init__(self, *commands):
        self.out = Lines()
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.processes = []
        for flags in commands:
            process = subprocess.Popen([sys.executable, "-m", "tools.data_service", *flags], cwd=ROOT, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.processes.append(process)
            cluster.stream_lines(process, f"[{flags[0]}]", self.out)

    def stop(self):
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        return [process.wait(timeout=60) for process in self.processes]


def _digests(dataset):
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
            for images, _ in dataset for image in images.numpy()]


def test_dispatcher_and_two_workers_deliver_every_element_to_one_consumer(records_dir, tmp_path):
    port, *worker_ports = cluster.free_ports(3)
    journal = tmp_path / "journal"  # --work_dir: the dispatcher journals its jobs (fault-tolerant mode)
    service = Service(["--role=dispatcher", f"--port={port}", f"--work_dir={journal}"],
                      *[["--role=worker", f"--port={p}", f"--dispatcher=localhost:{port}"] for p in worker_ports])
    try:
        service.out.wait_for("dispatcher listening", timeout=120)
        for _ in worker_ports:
            service.out.wait_for("worker serving dispatcher", timeout=120)
        record_set = recordset.open_record_set(records_dir)
        config = DataConfig(data_dir=records_dir, image_size=32, global_batch_size=1,
                            data_service=f"grpc://localhost:{port}", service_job="every-element")
        consumers = [iter(pipeline.train_dataset(record_set, config, epochs=1)) for _ in range(2)]
        received = [[], []]
        while consumers[0] or consumers[1]:  # read from both in turn, as two trainers would
            for index, iterator in enumerate(consumers):
                if iterator is None:
                    continue
                try:
                    received[index] += _digests([next(iterator)])
                except StopIteration:
                    consumers[index] = None
    finally:
        codes = service.stop()
    expected = _digests(pipeline.eval_dataset(record_set, "train", config))
    assert collections.Counter(received[0] + received[1]) == collections.Counter(expected)
    assert received[0] and received[1]  # both consumers got a share of the one epoch
    assert codes == [0, 0, 0] and service.out.getvalue().count("stopped") == 3
    assert any(path.is_file() and path.stat().st_size for path in journal.rglob("*"))


def test_trainer_runs_on_a_local_service_and_evaluates_locally(records_dir, tmp_path):
    port = cluster.free_ports(1)[0]
    service = Service(["--role=local", f"--port={port}", "--num_workers=2"])
    try:
        service.out.wait_for(f"trainers pass --data_service=grpc://localhost:{port}", timeout=120)
        config = TrainConfig(model_dir=str(tmp_path / "run"),
                             data=DataConfig(data_dir=records_dir, image_size=32, global_batch_size=8,
                                             data_service=f"grpc://localhost:{port}"),
                             model=ModelConfig(backbone="tiny", image_size=32, weights="none"),
                             augment=AugmentConfig(kind="none"), epochs=2, steps_per_epoch=3)
        lines = []
        summary = loop.train_and_evaluate(config, log=lines.append)
    finally:
        assert service.stop() == [0]
    assert any(f"tf.data service at grpc://localhost:{port}" in line for line in lines)
    record_set = recordset.open_record_set(records_dir)
    with open(tmp_path / "run" / "history.json") as f:
        history = json.load(f)
    assert len(history) == 2 and all(h["val_count"] == record_set.num_records("val") for h in history)
    assert summary["test"]["count"] == record_set.num_records("test")


def test_job_names_are_per_run_and_seed():
    assert data_service.job_name("runs/a", 42) == data_service.job_name("runs/a", 42)
    assert len({data_service.job_name("runs/a", 42), data_service.job_name("runs/b", 42),
                data_service.job_name("runs/a", 43)}) == 3


def test_stop_closes_the_servers_ports():
    local = data_service.LocalService(num_workers=1)
    data_service.check_reachable(local.target, timeout_secs=2)
    local.stop()
    with pytest.raises(InputError, match="no dispatcher answers"):
        data_service.check_reachable(local.target, timeout_secs=2)


def test_unreachable_dispatcher_is_named():
    port = cluster.free_ports(1)[0]
    with pytest.raises(InputError, match=f"--data_service=grpc://localhost:{port}: no dispatcher answers"):
        data_service.check_reachable(f"grpc://localhost:{port}", timeout_secs=2)


@pytest.mark.parametrize("flags,fragment", [
    (["--role=worker"], "--dispatcher=HOST:PORT"),
    (["--role=worker", "--dispatcher=nohostport"], "--dispatcher=nohostport"),
    (["--role=local", "--num_workers=0"], "--num_workers=0"),
    (["--role=dispatcher", "--port=70000"], "--port=70000"),
])
def test_bad_service_flags_are_one_line_errors(flags, fragment):
    assert_one_line_error(run("tools.data_service", *flags), fragment)


def test_bad_data_service_flag_on_train(tmp_path):
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={tmp_path}", f"--model_dir={tmp_path}/run",
                              "--data_service=localhost:5050"), "--data_service=localhost:5050", "grpc://")
