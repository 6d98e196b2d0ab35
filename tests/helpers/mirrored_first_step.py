"""Run as a script (it must configure devices before TensorFlow starts): one training step with
MirroredStrategy over 2 logical CPUs and with one device, same weights and global batch.

Adam's first update is lr * sign(gradient) nearly everywhere, blind to how gradients are scaled
and flipped by rounding where they are ~0, so the step is compared through Adam's first
moment after it (0.1 * the aggregated gradient) and the loss; printed as JSON.  With a second
argument `multilabel`: a 3-finding head, labels with ignored (-1) entries, weights per finding."""
import json
import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from cxr_fast.training.steps import Steps  # noqa: E402


def updated_weights(strategy, initial, images, labels, config, class_weights):
    steps = Steps(config, strategy, class_weights=class_weights)
    for layer in [*steps.model.layers, *steps.backbone.layers]:  # dropout masks cannot agree across strategies
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    steps.model.set_weights(initial)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    totals = steps.train_loop(iterator, tf.constant(1), tf.constant(0, tf.int64)).numpy()
    return [v.numpy() for v in steps.optimizer.variables if v.name.endswith("_momentum")], totals


def main(freeze_fraction, multilabel=False):
    findings = ("a", "b", "c") if multilabel else ()
    config = TrainConfig(model_dir="unused", data=DataConfig(data_dir="unused", image_size=32, global_batch_size=8),
                         model=ModelConfig(backbone="tiny", image_size=32, weights="none",
                                           freeze_fraction=freeze_fraction, findings=findings),
                         augment=AugmentConfig(kind="none"), learning_rate=1e-2)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (8, 32, 32, 1)).astype(np.uint8))
    if multilabel:
        labels = tf.constant(rng.integers(-1, 2, (8, 3)), tf.float32)  # a third of them ignored
        weights = [[1.0, 3.0], [2.0, 0.5], [1.0, 1.0]]
    else:
        labels, weights = tf.constant([0, 1, 1, 0, 1, 1, 1, 0], tf.float32), [2.0, 0.5]
    initial = Steps(config, tf.distribute.OneDeviceStrategy("/cpu:0"), weights).model.get_weights()
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one, one_totals = updated_weights(tf.distribute.OneDeviceStrategy("/cpu:0"), initial, images, labels, config,
                                      weights)
    two, two_totals = updated_weights(mirrored, initial, images, labels, config, weights)
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "max_moment": max(float(np.max(np.abs(a))) for a in one),
        "max_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(one, two)),
        "loss_one": float(one_totals[0] / one_totals[2]), "loss_two": float(two_totals[0] / two_totals[2]),
    }))


if __name__ == "__main__":
    main(float(sys.argv[1]), multilabel=sys.argv[2:] == ["multilabel"])
