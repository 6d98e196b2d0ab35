"""A local multi-worker cluster: N processes on 127.0.0.1, each with its own TF_CONFIG.

For trying `--strategy=multi_worker` on one machine and for the tests; on real hosts each
worker is started by the scheduler with the TF_CONFIG this module writes (docs/scaling.md).
The launcher streams every worker's output prefixed with `[worker i]`, and when one worker
fails it stops the others (SIGTERM to the worker's process group, SIGKILL after a grace
period) instead of leaving them blocked in a collective.  No TensorFlow import here: the
launcher process stays light and the workers own their devices.
"""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from cxr_fast.errors import InputError


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


def visible_gpus(environ=None):
    """The GPU ids this launcher may hand out: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [i.strip() for i in environ["CUDA_VISIBLE_DEVICES"].split(",") if i.strip()]
        return [] if ids[:1] == ["-1"] else ids
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, _ in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def gpu_environments(num_workers, gpus, gpus_per_worker=0, share=False):
    """Each worker's GPU environment entries, for `gpus` (ids) visible to the launcher.

    Default: the GPUs split evenly, worker i gets the i-th block (CUDA_VISIBLE_DEVICES), since
    every TensorFlow process reserves nearly all the memory of every GPU it sees, so a second
    worker on the same GPUs fails.  More workers than GPUs is an error unless `share`: then
    every worker sees every GPU with memory growth on (TF_FORCE_GPU_ALLOW_GROWTH), which fits
    small runs.  `gpus_per_worker` asks for a block size; without visible GPUs it still assigns
    ids 0.. (a scheduler's machine the launcher cannot inspect).
    """
    if share:
        shared = {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
        if gpus:
            shared["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        return [dict(shared) for _ in range(num_workers)]
    if not gpus and not gpus_per_worker:
        return [{} for _ in range(num_workers)]
    gpus = gpus or [str(i) for i in range(num_workers * gpus_per_worker)]
    per_worker = gpus_per_worker or len(gpus) // num_workers
    if per_worker == 0 or per_worker * num_workers > len(gpus):
        raise InputError(f"--num_workers={num_workers} with {per_worker or 1} GPU(s) each needs "
                         f"{(per_worker or 1) * num_workers} GPUs, but {len(gpus)} are visible ({','.join(gpus)}); "
                         "start fewer workers, or pass --share_gpus to let workers share GPUs (memory growth on)")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * per_worker:(i + 1) * per_worker])} for i in range(num_workers)]


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
    deadline = time.time() + 5  # SIGKILL is delivered asynchronously: wait until the groups are gone
    while _live_group_members({p.pid for p in processes}) and time.time() < deadline:
        time.sleep(0.02)


def _live_group_members(groups):
    """Pids of processes (not zombies) in the process groups `groups`, from /proc (empty elsewhere)."""
    live = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if fields[0] != "Z" and int(fields[2]) in groups:
                        live.append(int(entry))
    return live


class LocalCluster:
    """Starts `command` once per worker; `wait()` returns the cluster's exit code.

    Each worker runs in its own session (process group), so stopping it also stops anything it
    started.  `env` entries are added to every worker's environment, TF_CONFIG to each its own,
    and `worker_envs[i]` (see `gpu_environments`) to worker i's.
    """

    def __init__(self, command, num_workers, env=None, out=None, grace_secs=10.0, cwd=None, worker_envs=None):
        self.workers = [f"127.0.0.1:{port}" for port in free_ports(num_workers)]
        self.grace_secs = grace_secs
        self.out = out or sys.stdout
        self.processes, self._threads, lock = [], [], threading.Lock()
        try:
            for index in range(num_workers):
                worker_env = dict(os.environ, **(env or {}), **(worker_envs[index] if worker_envs else {}),
                                  TF_CONFIG=tf_config(self.workers, index), PYTHONUNBUFFERED="1")
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
