"""The step functions in one process: mixed precision (float32 augmentation, compute dtype at the
model's input, a step per policy, with loss scaling under mixed_float16) and the XLA-compiled
forward/backward.  The tiny CNN carries these checks: they concern the step around the model, not
the backbone, and an EfficientNetB0 graph took 50-80 s here per policy.  EfficientNet itself is
built in tests/training/test_model.py and trains in `.ci/run`'s `./demo.sh --quick`."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from cxr_fast.training.optimizers import FusedAdam
from cxr_fast.training.steps import Steps

pytestmark = pytest.mark.heavy(30)  # ~seconds here; scheduled first (tests/conftest.py)


def _config(augment="reference", batch=4):
    return TrainConfig(model_dir="unused", data=DataConfig(data_dir="unused", image_size=32, global_batch_size=batch),
                       model=ModelConfig(backbone="tiny", image_size=32, weights="none"),
                       augment=AugmentConfig(kind=augment))


def _nodes(concrete):
    graph = concrete.graph.as_graph_def()
    return list(graph.node) + [node for f in graph.library.function for node in f.node_def]


def _one_batch(strategy, batch=4):
    images = np.random.default_rng(0).integers(0, 255, (batch, 32, 32, 1)).astype(np.uint8)
    labels = tf.constant([0.0, 1.0] * (batch // 2))
    return iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, labels)).repeat()))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_augments_in_float32_and_feeds_the_compute_dtype(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        steps = Steps(_config(), strategy, [1.0, 1.0], policy=policy)
        assert steps.model.get_layer("pneumonia").dtype_policy.compute_dtype == "float32"  # sigmoid in float32
        assert isinstance(steps.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
        iterator = _one_batch(strategy)
        totals = steps.train_loop(iterator, tf.constant(2), tf.constant(0, tf.int64)).numpy()
        assert np.isfinite(totals).all() and totals[2] == 8  # a full step at this policy, twice
        nodes = _nodes(steps.train_loop.get_concrete_function(iterator, tf.constant(2), tf.constant(0, tf.int64)))
        resamples = [tf.dtypes.as_dtype(n.attr["dtype"].type) for n in nodes if n.op == "ImageProjectiveTransformV3"]
        assert resamples == [tf.float32]
        convolutions = {tf.dtypes.as_dtype(n.attr["T"].type).name for n in nodes if n.op == "Conv2D"}
        assert convolutions == {policy.split("_")[1]}  # the model computes in the policy's dtype
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_xla_step_compiles_and_trains():
    # The path GPUs take by default (--jit_compile=auto): forward/backward compiled by XLA (here on the CPU).
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    steps = Steps(_config(), strategy, [1.0, 1.0], jit=True)
    before = [w.numpy() for w in steps.model.trainable_weights]
    totals = steps.train_loop(_one_batch(strategy), tf.constant(3), tf.constant(0, tf.int64)).numpy()
    assert np.isfinite(totals).all() and totals[2] == 12
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(before, steps.model.trainable_weights))
    hlo = steps.forward_backward.experimental_get_compiler_ir(tf.zeros([4, 32, 32, 1]), tf.zeros([4]))(stage="hlo")
    assert hlo.startswith("HloModule")  # only jit-compiled functions have an XLA program
    probs = steps.predict(tf.zeros([5, 32, 32, 1], tf.uint8)).numpy()
    assert probs.shape == (5,) and np.isfinite(probs).all()


def test_precise_statistics_make_evaluation_mode_match_training_mode():
    # On one batch, population statistics are that batch's: the evaluation-mode backbone then
    # computes what the training-mode one does, while Keras' moving averages are far from it.
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    steps = Steps(_config(augment="none", batch=8), strategy, [1.0, 1.0])
    images = np.random.default_rng(3).integers(0, 256, (8, 32, 32, 1)).astype(np.uint8)
    rgb = np.repeat(images.astype(np.float32), 3, axis=-1)
    training = steps.backbone(rgb, training=True).numpy()
    assert not np.allclose(steps.backbone(rgb, training=False).numpy(), training, atol=1e-3)
    dataset = tf.data.Dataset.from_tensors((images, np.zeros(8, np.float32))).repeat()
    steps.statistics.precise(iter(strategy.experimental_distribute_dataset(dataset)), 2)
    np.testing.assert_allclose(steps.backbone(rgb, training=False).numpy(), training, atol=1e-3)
    assert {layer.momentum for layer in steps.backbone.layers if hasattr(layer, "momentum")} == {0.99}


def test_augmentation_ramp_is_resolved_from_the_start_and_follows_the_step():
    scratch = _config()  # --weights=none, 30 epochs: a quarter of them
    assert scratch.augment_ramp() == 7.5
    pretrained = TrainConfig(**{**scratch.__dict__, "model": ModelConfig(image_size=32)})  # ImageNet weights
    assert pretrained.augment_ramp() == 0.0  # the reference: full ranges from the first step
    assert TrainConfig(**{**scratch.__dict__, "augment": AugmentConfig(impl="chain")}).augment_ramp() == 0.0
    assert TrainConfig(**{**pretrained.__dict__, "augment_ramp_epochs": 2.0}).augment_ramp() == 2.0
    from cxr_fast.errors import InputError
    with pytest.raises(InputError, match="--augment_ramp_epochs"):
        TrainConfig(**{**scratch.__dict__, "augment_ramp_epochs": 31.0}).validate()
    with pytest.raises(InputError, match="--augment_impl=chain"):
        TrainConfig(**{**scratch.__dict__, "augment": AugmentConfig(impl="chain"), "augment_ramp_epochs": 1.0}
                    ).validate()
    steps = Steps(scratch, tf.distribute.OneDeviceStrategy("/cpu:0"), [1.0, 1.0], ramp_steps=100)
    strengths = [float(steps.ramp.strength(tf.constant(s, tf.int64))) for s in (0, 25, 100, 5000)]
    assert strengths == [0.0, 0.25, 1.0, 1.0]
    assert float(Steps(scratch, tf.distribute.OneDeviceStrategy("/cpu:0"), [1.0, 1.0]).ramp.strength(0)) == 1.0


def test_gated_ramp_holds_at_flips_only_until_started():
    scratch = _config()
    assert scratch.augment_ramp_start_auc == 0.7  # the default: the ramp waits for a learned sign
    from cxr_fast.errors import InputError
    for bad in (-0.1, 1.0):
        with pytest.raises(InputError, match="--augment_ramp_start_auc"):
            TrainConfig(**{**scratch.__dict__, "augment_ramp_start_auc": bad}).validate()
    steps = Steps(scratch, tf.distribute.OneDeviceStrategy("/cpu:0"), [1.0, 1.0], ramp_steps=100, ramp_start=None)
    assert not steps.ramp.started
    assert [float(steps.ramp.strength(s)) for s in (0, 10**6)] == [0.0, 0.0]
    step = tf.function(lambda s: steps.ramp.strength(s))  # traced once: the start is read, not baked in
    assert float(step(tf.constant(300, tf.int64))) == 0.0
    steps.ramp.start(200)
    assert steps.ramp.started
    assert [float(step(tf.constant(s, tf.int64))) for s in (199, 200, 250, 300, 5000)] == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_fused_adam_updates_as_keras_adam():
    # TensorFlow's fused kernel for the trainer's optimizer: the same weights, step after step.
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype(np.float32)
    weights = [keras.Variable(start), keras.Variable(start)]
    optimizers = [keras.optimizers.Adam(1e-2), FusedAdam(1e-2)]
    for step in range(5):
        gradient = tf.constant(rng.normal(size=(3, 4)).astype(np.float32))
        for optimizer, weight in zip(optimizers, weights):
            optimizer.apply_gradients([(gradient, weight)])
    assert not np.allclose(weights[0].numpy(), start)
    np.testing.assert_allclose(weights[1].numpy(), weights[0].numpy(), rtol=1e-5, atol=1e-6)


def test_the_loop_counts_images_apart_from_the_labels_it_scores():
    # A multi-label batch of 4 images x 3 findings with 5 ignored labels: 7 labels scored, 4 images.
    config = _config(augment="none")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, findings=("a", "b", "c")))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    steps = Steps(config, strategy, [[1.0, 1.0]] * 3)
    labels = tf.constant([[1.0, -1, 0], [-1, -1, 1], [0, 0, -1], [1, -1, 1]])
    images = np.zeros((4, 32, 32, 1), np.uint8)
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, labels)).repeat()))
    totals = steps.train_loop(iterator, tf.constant(1), tf.constant(0, tf.int64)).numpy()
    assert (totals[2], totals[3]) == (7, 4)
