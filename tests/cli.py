"""Helpers for tests that run entry points as a user does (`python -m MODULE FLAGS`, from the
repository root) and watch the processes they start."""
import io
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *args, timeout=600, env=None, preexec_fn=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def start_until(command, text, env=None):
    """Starts `command` (argv) from the repository root and reads its output until a line holds
    `text`; returns (the running process, its output so far).  Fails the test if it ends first."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **(env or {}))
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return process, "".join(seen)
    process.wait(timeout=60)
    raise AssertionError(f"{text!r} never appeared:\n{''.join(seen)[-3000:]}")


def assert_one_line_error(result, *fragments):
    """Exit code 2 and a single `prog: error: ...` line naming what is wrong, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


class Lines(io.StringIO):
    """A thread-safe output for `cxr_fast.distributed.cluster.LocalCluster` that keeps what the workers printed."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text):
        with self.lock:
            return super().write(text)

    def wait_for(self, text, timeout):
        """Blocks until `text` has been printed; fails the test after `timeout` seconds."""
        deadline = time.time() + timeout
        while text not in self.getvalue():
            assert time.time() < deadline, f"{text!r} never appeared:\n{self.getvalue()[-3000:]}"
            time.sleep(0.2)


def alive(pid):
    """Whether process `pid` still runs (a zombie has exited)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def started_pids(folder, count):
    """The pids that `tests/helpers/sleep_worker.py` workers 0..count-1 wrote to `folder`."""
    deadline = time.time() + 30
    while time.time() < deadline:
        files = [os.path.join(folder, f"pids{i}") for i in range(count)]
        if all(os.path.isfile(f) and open(f).read() for f in files):
            return [int(p) for f in files for p in open(f).read().split()]
        time.sleep(0.1)
    raise AssertionError("workers did not start")
