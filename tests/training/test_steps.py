"""The step functions under MirroredStrategy: the same update as one device with the same global batch."""
import json
import os
import subprocess
import sys

from cli import ROOT


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


def test_mixed_float16_step_scales_the_loss_and_stays_finite():
    import keras
    import numpy as np
    import tensorflow as tf

    from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
    from cxr_fast.training.steps import Steps

    config = TrainConfig(model_dir="unused", data=DataConfig(data_dir="unused", image_size=32, global_batch_size=4),
                         model=ModelConfig(backbone="B0", image_size=32, weights="none"), augment=AugmentConfig())
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        steps = Steps(config, strategy, [1.0, 1.0], policy="mixed_float16")
        assert isinstance(steps.optimizer, keras.optimizers.LossScaleOptimizer)
        assert steps.model.get_layer("pneumonia").dtype_policy.compute_dtype == "float32"  # sigmoid in float32
        images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1)).astype(np.uint8)
        dataset = tf.data.Dataset.from_tensors((images, tf.constant([0.0, 1.0, 1.0, 0.0]))).repeat()
        totals = steps.train_loop(iter(strategy.experimental_distribute_dataset(dataset)), tf.constant(2)).numpy()
        assert np.isfinite(totals).all() and totals[2] == 8
    finally:
        keras.mixed_precision.set_global_policy("float32")
