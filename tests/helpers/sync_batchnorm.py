"""Run as a script with CXR_FAST_CPU_DEVICES=4 (devices must be set before TensorFlow starts): one
training step of the tiny CNN over 4 replicas, each with its own quarter of a global batch of 16,
with BatchNorm synchronized and not; printed as one JSON line.

    python sync_batchnorm.py  ->  {"off": {...}, "on": {...}}

Per setting: the largest difference between the replicas' copies of the first BatchNorm layer's
moving mean, and between them and the mean of that layer's input over the whole global batch
(momentum 0, so the moving mean is the batch's own mean after the step).
"""
import json

from cxr_fast import topology

topology.apply()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bn_probe import first_bn_population  # noqa: E402
from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from cxr_fast.training.steps import Steps  # noqa: E402

STRATEGY = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
IMAGES = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 1)).astype(np.uint8)
IMAGES[8:] //= 4  # replicas 2 and 3 see darker films: their own statistics differ


def measure(synchronized):
    config = TrainConfig(model_dir="unused", data=DataConfig(data_dir="unused", image_size=32, global_batch_size=16),
                         model=ModelConfig(backbone="tiny", image_size=32, weights="none",
                                           sync_batchnorm=synchronized),
                         augment=AugmentConfig(kind="none"))
    steps = Steps(config, STRATEGY, [1.0, 1.0])
    layer = steps.backbone.get_layer("tiny_bn0")
    layer.momentum = 0.0
    population, _ = first_bn_population(steps, IMAGES)  # under the weights of the step's forward pass
    labels = np.arange(16, dtype=np.float32) % 2
    dataset = tf.data.Dataset.from_tensor_slices((IMAGES, labels)).batch(16).repeat()
    steps.train_loop(iter(STRATEGY.experimental_distribute_dataset(dataset)), tf.constant(1), tf.constant(0, tf.int64))
    means = [np.asarray(v) for v in STRATEGY.experimental_local_results(layer.moving_mean.value)]
    return {"replicas": len(means), "between_replicas": float(max(np.abs(m - means[0]).max() for m in means)),
            "from_global_batch": float(max(np.abs(m - population).max() for m in means)),
            "scale": float(np.abs(population).max())}


print(json.dumps({"off": measure(False), "on": measure(True)}))
