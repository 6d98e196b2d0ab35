"""A local multi-worker cluster: N processes on 127.0.0.1, each with its own TF_CONFIG.

For trying `--strategy=multi_worker` on one machine and for the tests; on real hosts each
worker is started by the scheduler with the TF_CONFIG this module writes (see BUILD.md).
The launcher streams every worker's output prefixed with `[worker i]`, and when one worker
fails it stops the others (SIGTERM to the worker's process group, SIGKILL after a grace
period) instead of leaving them blocked in a collective.  No TensorFlow import here: the
launcher process stays light and the workers own their devices.
"""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_ports(count, host="127.0.0.1"):
    """`count` distinct TCP ports that were free a moment ago (all held open until all are found)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def tf_config(workers, index):
    """The TF_CONFIG value of worker `index` in a cluster of `workers` ("host:port" strings)."""
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})


def _stream(process, prefix, out, lock):
    for line in process.stdout:
        with lock:
            out.write(f"{prefix} {line}" if line.endswith("\n") else f"{prefix} {line}\n")
            out.flush()


def stream_lines(process, prefix, out, lock=None):
    """Copies `process`'s text output to `out` line by line, each prefixed, from a daemon thread."""
    thread = threading.Thread(target=_stream, args=(process, prefix, out, lock or threading.Lock()), daemon=True)
    thread.start()
    return thread


def _signal_groups(processes, sig):
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def _stop(processes, grace_secs):
    """SIGTERM to every worker's process group (a worker that exited may have left children there),
    SIGKILL to all of them once the workers are gone or `grace_secs` have passed."""
    _signal_groups(processes, signal.SIGTERM)
    deadline = time.time() + grace_secs
    while any(p.poll() is None for p in processes) and time.time() < deadline:
        time.sleep(0.05)
    _signal_groups(processes, signal.SIGKILL)
    for process in processes:
        process.wait()


class LocalCluster:
    """Starts `command` once per worker; `wait()` returns the cluster's exit code.

    Each worker runs in its own session (process group), so stopping it also stops anything it
    started.  `env` entries are added to every worker's environment, TF_CONFIG to each its own,
    and with `gpus_per_worker` each worker sees only its own GPUs (CUDA_VISIBLE_DEVICES).
    """

    def __init__(self, command, num_workers, env=None, out=None, grace_secs=10.0, cwd=None, gpus_per_worker=0):
        self.workers = [f"127.0.0.1:{port}" for port in free_ports(num_workers)]
        self.grace_secs = grace_secs
        self.out = out or sys.stdout
        self.processes, self._threads, lock = [], [], threading.Lock()
        try:
            for index in range(num_workers):
                worker_env = dict(os.environ, **(env or {}), TF_CONFIG=tf_config(self.workers, index),
                                  PYTHONUNBUFFERED="1")
                if gpus_per_worker:
                    first = index * gpus_per_worker
                    worker_env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(first, first + gpus_per_worker)))
                process = subprocess.Popen(command, env=worker_env, cwd=cwd, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
                self.processes.append(process)
                self._threads.append(stream_lines(process, f"[worker {index}]", self.out, lock))
        except BaseException:
            self.stop()
            raise

    def wait(self, poll_secs=0.1):
        """Until all workers succeed (0) or one fails: then the others are stopped and its code returned."""
        try:
            while True:
                codes = [p.poll() for p in self.processes]
                failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
                if failed:
                    index, code = failed[0]
                    if any(c is None for c in codes):
                        self.out.write(f"[launcher] worker {index} exited with code {code}; stopping the others\n")
                    return code
                if all(c == 0 for c in codes):
                    return 0
                time.sleep(poll_secs)
        finally:
            self.stop()

    def stop(self):
        _stop(self.processes, self.grace_secs)
        for thread in self._threads:
            thread.join(timeout=5)
