"""Run as a script (devices must be configured before TensorFlow starts): checks of the step
functions with MirroredStrategy over 2 logical CPUs, printed as one JSON line.

    python two_replicas.py   ->  {"replicas": 2, "overflow": {...}, "randomness": {...}, "predict": {...}}

- overflow: mixed_float16, one global batch whose replica-1 half overflows float16 (1e30 pixels);
  weights and loss scale read on both replicas before and after the step.
- randomness: the same images on both replicas; their dropout masks (seen through the model's
  output with augmentation off) and their augmented images, at two steps, twice.
- predict: `Steps.predict` over 2 replicas vs the one-device model on an odd-sized batch.
- precise: precise BatchNorm statistics pooled over both replicas vs computed directly; both
  replicas' copies equal; every layer's momentum restored.
- ramp: a gated augmentation ramp's strength on both replicas, read by one traced function
  before and after `ramp.start` (the mirrored start set from the loop's cross-replica context).
"""
import dataclasses
import json

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bn_probe import first_bn_population, first_bn_statistics  # noqa: E402
from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from cxr_fast.training.steps import Steps  # noqa: E402

STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def tiny_model(config):
    """GAP -> Dense -> Dropout -> Dense: enough to see loss scaling and dropout, built in a second."""
    inputs = keras.Input((config.image_size, config.image_size, config.channels), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)  # outputs stay off the sigmoid's flat ends, so masks show
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(x))
    x = keras.layers.Dense(32, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    return model, model


def config(augment="none"):
    return TrainConfig(model_dir="unused", data=DataConfig(data_dir="unused", image_size=32, global_batch_size=8),
                       model=ModelConfig(image_size=32, weights="none"), augment=AugmentConfig(kind=augment),
                       learning_rate=1e-2, seed=7)


def per_replica(value):
    return [np.asarray(v) for v in STRATEGY.experimental_local_results(value)]


def overflow():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        steps = Steps(config(), STRATEGY, [1.0, 1.0], "mixed_float16", build_model=tiny_model)
        images = np.full((8, 32, 32, 1), 100.0, np.float32)
        images[4:] = 1e30  # replica 1's half: inf in float16
        labels = np.array([0, 1, 0, 1, 0, 1, 0, 1], np.float32)
        dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
        iterator = iter(STRATEGY.experimental_distribute_dataset(dataset))
        kernel = steps.model.trainable_variables[0].value  # the mirrored tf.Variable behind the Keras one
        before = per_replica(kernel)
        scale_before = per_replica(steps.optimizer.dynamic_scale.value)
        steps.train_loop(iterator, tf.constant(1), tf.constant(0, tf.int64))
        after = per_replica(kernel)
        return {"unchanged": [bool(np.array_equal(b, a)) for b, a in zip(before, after)],
                "finite": [bool(np.isfinite(a).all()) for a in after],
                "scale_before": [float(s) for s in scale_before],
                "scale_after": [float(s) for s in per_replica(steps.optimizer.dynamic_scale.value)]}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def randomness():
    out = {}
    same = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1)), tf.uint8)
    dropout_steps = Steps(config("none"), STRATEGY, [1.0, 1.0], build_model=tiny_model)
    augment_steps = Steps(config("reference"), STRATEGY, [1.0, 1.0], build_model=tiny_model)

    @tf.function
    def outputs(step):
        return STRATEGY.run(lambda: dropout_steps.model(dropout_steps.replica_inputs(same, step), training=True))

    @tf.function
    def augmented(step):
        return STRATEGY.run(lambda: augment_steps.replica_inputs(same, step))

    drop = [per_replica(outputs(tf.constant(s, tf.int64))) for s in (0, 1, 0)]
    aug = [per_replica(augmented(tf.constant(s, tf.int64))) for s in (0, 1, 0)]
    out["dropout_replicas_differ"] = bool(not np.allclose(drop[0][0], drop[0][1]))
    out["dropout_steps_differ"] = bool(not np.allclose(drop[0][0], drop[1][0]))
    out["dropout_repeats"] = bool(np.array_equal(drop[0][0], drop[2][0]) and np.array_equal(drop[0][1], drop[2][1]))
    out["augment_replicas_differ"] = bool(not np.allclose(aug[0][0], aug[0][1]))
    out["augment_steps_differ"] = bool(not np.allclose(aug[0][0], aug[1][0]))
    out["augment_repeats"] = bool(np.array_equal(aug[0][0], aug[2][0]) and np.array_equal(aug[0][1], aug[2][1]))
    return out


def predict():
    steps = Steps(config(), STRATEGY, [1.0, 1.0], build_model=tiny_model)
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (7, 32, 32, 1)), tf.uint8)
    two = steps.predict(images).numpy()
    one = steps.model(tf.cast(images, tf.float32), training=False).numpy().reshape(-1)
    return {"count": int(two.shape[0]), "max_difference": float(np.max(np.abs(two - one)))}


def precise():
    """Precise statistics on 2 replicas (3 global batches of 8) vs the population of all 24 images."""
    steps = Steps(config_tiny(), STRATEGY, [1.0, 1.0])
    images = np.random.default_rng(2).integers(0, 256, (24, 32, 32, 1)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(24, np.float32))).batch(8)
    steps.statistics.precise(iter(STRATEGY.experimental_distribute_dataset(dataset)), 3)
    expected = first_bn_population(steps, images)
    got = first_bn_statistics(steps)
    copies = [per_replica(v) for layer in steps.backbone.layers if hasattr(layer, "moving_mean")
              for v in (layer.moving_mean.value, layer.moving_variance.value)]
    return {"max_difference": float(max(np.max(np.abs(a - b)) for a, b in zip(got, expected))),
            "replicas_agree": all(np.array_equal(c[0], c[1]) for c in copies),
            "momenta": sorted({layer.momentum for layer in steps.backbone.layers if hasattr(layer, "momentum")})}


def ramp():
    steps = Steps(config("reference"), STRATEGY, [1.0, 1.0], build_model=tiny_model, ramp_steps=10, ramp_start=None)

    @tf.function
    def strength(step):
        return STRATEGY.run(lambda: steps.ramp.strength(step))

    before = [float(v) for v in per_replica(strength(tf.constant(8, tf.int64)))]
    steps.ramp.start(5)
    after = [float(v) for v in per_replica(strength(tf.constant(10, tf.int64)))]
    return {"before": before, "after": after, "traces": strength.experimental_get_tracing_count()}


def config_tiny():
    return dataclasses.replace(config(), model=ModelConfig(backbone="tiny", image_size=32, weights="none"))


if __name__ == "__main__":
    print(json.dumps({"replicas": STRATEGY.num_replicas_in_sync, "overflow": overflow(),
                      "randomness": randomness(), "predict": predict(), "precise": precise(), "ramp": ramp()}))
