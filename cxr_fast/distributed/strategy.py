"""Where and how a run computes: strategy, precision and XLA, chosen per device, and who writes.

Choices measured on this project's CPU machine (docs/design.md, docs/scaling.md): XLA made an EfficientNetB2 step
about 12x slower and mixed_bfloat16 about 2x slower than float32, so `auto` turns both off on
CPU.  On GPUs XLA fuses the many small ops of EfficientNet; bfloat16 needs compute capability
8.0 (Ampere) or newer, float16 (with loss scaling) 7.0 (Volta, Turing).
"""
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging

from cxr_fast import topology
from cxr_fast.errors import ClusterError, InputError


def _gpus():
    return tf.config.list_physical_devices("GPU")


def make_strategy(name, collective_timeout_secs=0.0):
    """auto: MirroredStrategy over all GPUs when there are several, else one device.

    `mirrored` without GPUs mirrors over the logical CPU devices (`cxr_fast.topology`: N of them
    under CXR_FAST_CPU_DEVICES=N), which is how the tests run an N-GPU host on one CPU.
    `multi_worker` reads the cluster from TF_CONFIG (see `communication_options`).
    """
    gpus = _gpus()
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise InputError("--strategy=multi_worker needs the TF_CONFIG environment variable (cluster and task); "
                             "see the README (several hosts) or start the workers with `python -m tools.launch_local`")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as err:
            raise InputError(f"TF_CONFIG is not valid JSON ({err})") from None
        options = communication_options(bool(gpus), collective_timeout_secs)
        # from the switch itself: listing logical devices now would start TensorFlow too early
        with _mirroring_cpus(0 if gpus else topology.cpu_devices()):
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise InputError(f"--strategy={name} is not one of auto, one_device, mirrored, multi_worker")


def communication_options(gpus, timeout_secs=0.0):
    """Collectives across workers: NCCL between GPUs (TensorFlow's AUTO picks ring all-reduce
    unless asked), ring on CPUs.  A timeout (> 0) is TensorFlow's debugging aid that starts a
    thread per collective, so it is off by default: a dead worker is noticed through the
    coordination service's heartbeats; the timeout bounds only a worker that is alive but stuck."""
    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.experimental.CommunicationOptions(implementation=implementation,
                                                           timeout_seconds=timeout_secs or None)


@contextlib.contextmanager
def _mirroring_cpus(count):
    """While MultiWorkerMirroredStrategy is built, each worker mirrors over `count` logical CPUs.

    Without GPUs, TensorFlow gives every worker one CPU replica and has no option for more; the
    topology switch (`cxr_fast.topology`, tests and debugging only) wants N replicas per worker,
    as on hosts of N GPUs, so the strategy's choice of local devices is replaced for the
    duration of the constructor (0 or 1: nothing changes).
    """
    if count <= 1:
        yield
        return
    module = sys.modules[tf.distribute.MultiWorkerMirroredStrategy.__module__]
    extended = module.CollectiveAllReduceExtended
    original = extended._initialize_local_devices

    def local_cpus(self, cluster_resolver, worker_device):
        return tuple(f"{worker_device}/device:CPU:{i}" for i in range(count)), "CPU"

    extended._initialize_local_devices = local_cpus
    try:
        yield
    finally:
        extended._initialize_local_devices = original


def _compute_capability():
    gpus = _gpus()
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("compute_capability")


def choose_precision(name):
    """The Keras dtype policy name for a --precision value."""
    if name != "auto":
        return name
    capability = _compute_capability()
    if capability is None:
        return "float32"
    if capability >= (8, 0):
        return "mixed_bfloat16"
    return "mixed_float16" if capability >= (7, 0) else "float32"


def choose_jit(name):
    if name == "auto":
        return bool(_gpus())
    return name == "on"


def is_chief(strategy):
    """Only the chief (task 0 of a multi-worker cluster, or the one process) writes outputs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def num_workers(strategy):
    """Processes (hosts) in the run: 1 unless a multi-worker cluster spans several."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return len(spec.get("worker", [])) + len(spec.get("chief", []))


_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def _tasks(text):
    return ", ".join(dict.fromkeys(f"{job} {task}" for job, task in _TASK.findall(text)))


def _lost_worker(message):
    """A short account of a cluster failure from TensorFlow's long error text."""
    if "unhealthy" in message:
        return f"{_tasks(message.split('unhealthy', 1)[1]) or 'a worker'} stopped sending heartbeats " \
               "(crashed, killed or preempted)"
    if "coordination service" in message:
        return "the chief (worker 0, which coordinates the cluster) stopped answering (crashed, killed or preempted)"
    if "remote target" in message:
        return f"{_tasks(message.split('remote target', 1)[1]) or 'a worker'} cannot be reached " \
               "(crashed, killed, or the network failed)"
    lines = [line for line in message.strip().splitlines() if "aborted by" in line] or message.strip().splitlines()
    return lines[0]


@contextlib.contextmanager
def cluster_errors(multi_worker, timeout_secs):
    """Turns TensorFlow's errors for a lost worker or a stuck collective into one `ClusterError`."""
    try:
        yield
    except tf.errors.DeadlineExceededError:
        if not multi_worker:
            raise
        raise ClusterError(f"a collective operation waited longer than --collective_timeout_secs={timeout_secs:g} "
                           "for another worker; check every worker's log, then start all workers again with the "
                           "same command (the run resumes from the last checkpoint in --model_dir)") from None
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as err:
        if not multi_worker:
            raise
        logging.info("TensorFlow's error: %s", err.message)  # shown with --verbosity=0
        raise ClusterError(f"the cluster lost a worker: {_lost_worker(err.message)}; check every worker's log, "
                           "then start all workers again with the same command (the run resumes from the last "
                           "checkpoint in --model_dir)") from None


class WriteDir:
    """The folder a process writes to: model_dir on the chief, a temporary folder elsewhere.

    Every worker must take part in saving a distributed checkpoint, so non-chief workers
    write theirs to a private folder that is removed when the run ends.
    """

    def __init__(self, model_dir, chief):
        self.chief = chief
        self.path = model_dir if chief else tempfile.mkdtemp(prefix="cxr_fast_worker_")

    def cleanup(self):
        if not self.chief:
            shutil.rmtree(self.path, ignore_errors=True)


class Gather:
    """A float vector from this worker -> [replicas, len] array of every replica's copy (one
    tf.function per strategy): how workers share a host value (the chief's clock, epoch logs)."""

    def __init__(self, strategy):
        self.strategy = strategy
        self._gather = tf.function(self._gather_values)

    def _gather_values(self, values):
        per_replica = self.strategy.run(lambda: tf.identity(values)[None])
        return self.strategy.gather(per_replica, axis=0)

    def __call__(self, values):
        values = np.asarray(values, np.float64)
        if self.strategy.num_replicas_in_sync == 1:
            return values[None]
        return self._gather(tf.constant(values)).numpy()
