"""tf.data service: the training pipeline's reading and decoding on CPU machines, not on GPU hosts.

One dispatcher and any number of workers (`tools.data_service`) run the pipeline that
`cxr_fast.data.pipeline.train_dataset` defines; the trainers only receive finished batches.
The processing mode is DYNAMIC sharding (the "distributed_epoch" mode): the dispatcher hands
shard files to service workers as they ask for them, and every element goes to exactly one
consumer, so N trainers that share one job split each epoch between them instead of each
seeing it N times.  All trainers of a run must use the same job name (one per run) and the
same pipeline definition; the trainer derives the name from --model_dir and the seed.

Service workers read the shard files themselves: the record set must sit at the same absolute
path on them (shared storage) as on the trainer.
"""
import hashlib
import socket

import tensorflow as tf

from cxr_fast.errors import InputError


def job_name(model_dir, seed):
    """One job per run (and per resume, which draws a new order): shared by all its trainers."""
    return "cxr_fast-" + hashlib.sha1(f"{model_dir}|{seed}".encode()).hexdigest()[:16]


def check_reachable(address, timeout_secs=10.0):
    """Fails fast with a clear error when no dispatcher listens at `address` (the client would retry forever)."""
    host, port = address.split("://", 1)[1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout_secs).close()
    except OSError as err:
        raise InputError(f"--data_service={address}: no dispatcher answers ({err.strerror or err}); start one with "
                         "`python -m tools.data_service --role=dispatcher` or drop the flag to read locally") from None


def start_dispatcher(port=0, work_dir=""):
    """A dispatcher on `port` (0: any free port); with `work_dir` it journals its state and survives restarts."""
    config = tf.data.experimental.service.DispatcherConfig(port=port, work_dir=work_dir or None,
                                                           fault_tolerant_mode=bool(work_dir))
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher, port=0, worker_address=""):
    """A worker serving `dispatcher` ("host:port"); `worker_address` is how trainers reach it."""
    config = tf.data.experimental.service.WorkerConfig(dispatcher_address=dispatcher, port=port,
                                                       worker_address=worker_address or None)
    return tf.data.experimental.service.WorkerServer(config)


class LocalService:
    """A dispatcher and `num_workers` workers in this process, for trying the service and for tests."""

    def __init__(self, num_workers=2, port=0):
        self.dispatcher = start_dispatcher(port)
        address = self.dispatcher.target.split("://", 1)[1]
        self.port = int(address.rsplit(":", 1)[1])
        self.workers = [start_worker(address) for _ in range(num_workers)]

    @property
    def target(self):
        """The address trainers take as --data_service."""
        return f"grpc://localhost:{self.port}"

    def stop(self):
        stop([self.dispatcher, *self.workers])


def stop(servers):
    """Stops service servers, workers before their dispatcher."""
    for server in reversed(servers):
        # TensorFlow's DispatchServer and WorkerServer have no public stop (only `join` and the
        # stop at garbage collection); `_stop` is what their own tests call.  Pinned by
        # tests/distributed/test_service.py: after it the port refuses connections.
        server._stop()  # noqa: SLF001
