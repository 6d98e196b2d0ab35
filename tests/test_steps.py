"""The step functions under MirroredStrategy: the same update as one device with the same global batch."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mirrored_on_two_cpus_matches_one_device():
    # A fresh process: logical devices must be set before TensorFlow initializes them.
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "helpers", "mirrored_first_step.py"), "1.0"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert abs(report["loss_one"] - report["loss_two"]) < 1e-5
    # Adam's first moment is 0.1 x the gradient summed over replicas, each scaled by the global batch.
    assert report["max_moment"] > 1e-3
    assert report["max_difference"] < 1e-4 * report["max_moment"]
