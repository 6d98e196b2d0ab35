"""The step functions across replicas and workers (fresh processes: logical devices must be set
before TensorFlow starts): the same update as one device, loss scaling agreed by all replicas,
per-replica and per-worker randomness, evaluation across replicas."""
import json
import os
import subprocess
import sys

import pytest

from cli import ROOT

pytestmark = pytest.mark.heavy(60)  # ~seconds here; scheduled first (tests/conftest.py)


def _helper(name, *args, env=None):
    """Runs tests/helpers/NAME in a fresh process (logical devices must be set before TensorFlow starts)."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "helpers", name), *args],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mirrored_on_two_cpus_matches_one_device():
    report = _helper("mirrored_first_step.py", "1.0")
    assert report["replicas"] == 2
    assert abs(report["loss_one"] - report["loss_two"]) < 1e-5
    # Adam's first moment is 0.1 x the gradient summed over replicas, each scaled by the global batch.
    assert report["max_moment"] > 1e-3
    assert report["max_difference"] < 1e-4 * report["max_moment"]


def test_mirrored_multilabel_step_matches_one_device():
    # One sigmoid per finding, ignored labels masked, weights per finding: the same update on 2 replicas.
    report = _helper("mirrored_first_step.py", "1.0", "multilabel")  # frozen backbone: BatchNorm alike
    assert abs(report["loss_one"] - report["loss_two"]) < 1e-5
    assert report["max_moment"] > 1e-3 and report["max_difference"] < 1e-4 * report["max_moment"]


@pytest.fixture(scope="module")
def two_replicas():
    return _helper("two_replicas.py")


def test_an_overflow_on_one_replica_skips_the_step_on_both(two_replicas):
    overflow = two_replicas["overflow"]
    assert overflow["unchanged"] == [True, True] and overflow["finite"] == [True, True]
    assert overflow["scale_after"] == [s / 2 for s in overflow["scale_before"]]  # lowered together


def test_replicas_draw_their_own_dropout_and_augmentation_reproducibly(two_replicas):
    randomness = two_replicas["randomness"]
    assert randomness["dropout_replicas_differ"] and randomness["augment_replicas_differ"]
    assert randomness["dropout_steps_differ"] and randomness["augment_steps_differ"]
    assert randomness["dropout_repeats"] and randomness["augment_repeats"]  # a function of (seed, step, replica)


def test_gated_ramp_starts_on_both_replicas_without_a_retrace(two_replicas):
    ramp = two_replicas["ramp"]
    assert ramp["before"] == [0.0, 0.0] and ramp["after"] == [0.5, 0.5] and ramp["traces"] == 1


def test_evaluation_across_replicas_matches_one_device(two_replicas):
    predict = two_replicas["predict"]
    assert predict["count"] == 7 and predict["max_difference"] < 1e-6


def test_precise_statistics_pool_both_replicas(two_replicas):
    precise = two_replicas["precise"]
    assert precise["max_difference"] < 1e-3 and precise["replicas_agree"]
    assert precise["momenta"] == [0.99]  # Keras' default, set back after the statistics pass


def test_two_workers_draw_different_augmentations_and_agree_on_statistics():
    from cli import Lines
    from cxr_fast.distributed import cluster

    out = Lines()
    helper = os.path.join(ROOT, "tests", "helpers", "worker_steps.py")
    local = cluster.LocalCluster([sys.executable, helper], 2, env={"PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
                                 out=out, cwd=ROOT)
    assert local.wait() == 0, out.getvalue()[-3000:]
    reports = {}
    for line in out.getvalue().splitlines():
        if line.startswith("[worker ") and line.rstrip().endswith("}"):
            reports[line[8]] = json.loads(line.split("] ", 1)[1])
    assert set(reports) == {"0", "1"}, out.getvalue()[-3000:]
    assert reports["0"]["digest"] != reports["1"]["digest"]  # same images, same seed and step: other replica
    assert reports["0"]["repeats"] and reports["1"]["repeats"]
    assert reports["0"]["statistics"] == reports["1"]["statistics"]  # every worker holds the same statistics
    assert reports["0"]["pooled"] and reports["1"]["pooled"]  # pooled over both workers' different batches
    # CPU workers all-reduce by ring (GPU workers: NCCL, tests/distributed/test_strategy.py); no timeout thread
    assert [(r["collectives"], r["timeout"]) for r in reports.values()] == [("RING", None)] * 2


def test_synchronized_batchnorm_pools_the_global_batch_on_four_replicas():
    # 4 images per replica: --sync_batchnorm=auto turns this on (tests/test_topology.py sees it in the log).
    report = _helper("sync_batchnorm.py", env={"CXR_FAST_CPU_DEVICES": "4"})
    off, on = report["off"], report["on"]
    assert off["replicas"] == on["replicas"] == 4
    assert off["between_replicas"] > 0.05 * off["scale"]  # per replica: each its own quarter's statistics
    assert on["between_replicas"] == 0.0  # synchronized: the same statistics on every replica
    assert on["from_global_batch"] < 1e-4 * on["scale"]  # ... those of the whole global batch
