"""Augmentation cost: the fused single-resample layer vs the chain of five keras-cv layers, and
both as a share of an EfficientNet training step on the same batch and device.

    python -m benchmarks.augment --seconds=10 --json=augment.json

Targets (docs/benchmarks.md): fused >= 3x the chain; fused <= 2% of an EfficientNetB2 step at 128 px.
"""
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import common
from cxr_fast.config import AugmentConfig, ModelConfig
from cxr_fast.training import augment
from cxr_fast.training import model as model_lib


def augment_rate(impl, images, seconds):
    """Images/s of one implementation on one batch, inside a tf.function."""
    layer = augment.Augmentation(AugmentConfig(impl=impl), seed=0)
    step = tf.function(lambda x: layer(x, training=True))
    return common.call_rate(lambda: step(images).numpy(), seconds) * int(images.shape[0])


def train_step_rate(backbone, images, labels, seconds):
    """Images/s of a float32 forward/backward/Adam update of the reference model (no augmentation)."""
    config = ModelConfig(backbone=backbone, image_size=int(images.shape[1]), weights="none", channels=1)
    model, _ = model_lib.build_model(config)
    optimizer = keras.optimizers.Adam(1e-4)
    loss_fn = keras.losses.BinaryCrossentropy()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(tf.cast(x, tf.float32), training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return common.call_rate(lambda: step(images, labels).numpy(), seconds, warmup_calls=2) * int(images.shape[0])


def run(seconds, batch=64, size=128, backbone="B2", log=print, step_rate=None):
    """Both implementations' rates and their shares of a train step: `step_rate` when the caller
    measured one on this device (run_all passes train_step's: the real step with its input pipeline),
    else a float32 step of `backbone` on this batch, measured here and reported as a row."""
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 2, (batch, 1)).astype(np.float32))
    rates = {impl: augment_rate(impl, images, seconds) for impl in ("fused", "chain")}
    for impl, rate in rates.items():
        log(f"augment {impl}: {rate:,.0f} img/s")
    settings = {"batch": batch, "image_size": size, "channels": 1, "device": "CPU" if not
                tf.config.list_physical_devices("GPU") else "GPU"}
    step = step_rate
    if step is None:
        step = train_step_rate(backbone, images, labels, seconds)
        log(f"{model_lib.backbone_name(backbone)} train step: {step:,.1f} img/s")
    variants = [{"name": f"augment {impl}", "img_per_s": rate, "settings": settings,
                 "share_of_train_step": step / rate} for impl, rate in rates.items()]
    if step_rate is None:
        variants.append({"name": f"{model_lib.backbone_name(backbone)} train step (float32)", "img_per_s": step,
                         "settings": settings})
    return {"variants": variants, "fused_speedup_over_chain": rates["fused"] / rates["chain"],
            "fused_share_of_step": step / rates["fused"], "chain_share_of_step": step / rates["chain"]}


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    result = run(FLAGS.seconds, FLAGS.batch_size, FLAGS.image_size, FLAGS.backbone)
    print(common.table(result["variants"]))
    print(f"fused is {result['fused_speedup_over_chain']:.1f}x the chain; augmentation costs "
          f"{100 * result['fused_share_of_step']:.2f}% (fused) / {100 * result['chain_share_of_step']:.2f}% (chain) "
          "of a train step")
    common.write_json(FLAGS.json, {"benchmark": "augment", "machine": common.machine(), **result})


if __name__ == "__main__":
    flags.DEFINE_float("seconds", 10.0, "Measuring window per variant, after warm-up.")
    flags.DEFINE_integer("batch_size", 64, "Images per batch.")
    flags.DEFINE_integer("image_size", 128, "Square image size.")
    flags.DEFINE_string("backbone", "B2", "EfficientNet variant of the train step.")
    flags.DEFINE_string("json", None, "Write the results here as JSON.")
    app.run(main)
