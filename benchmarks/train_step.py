"""What the training loop itself can feed, and what the model's step costs, in one run.

    python -m benchmarks.train_step --data_dir=records/kermany128 --seconds=20 --json=train_step.json
    CXR_FAST_CPU_DEVICES=2 python -m benchmarks.train_step --strategy=mirrored ...   (2 replicas on a CPU)

(a) What the host can feed, batch 256, 50 steps per call (the GPU default), no augmentation:
    - loop fixed cost: the trainer's own `Steps.train_loop` (iterator pulled inside the
      tf.function, per-replica seeding, loss, optimizer update, the loop's sums) on a resident
      batch of 8 px images, so per-pixel work is nil, with as many variables as EfficientNetB2's
      trainable ones (305, a gradient and an Adam update of each per replica) of one value each:
      the per-variable dispatch a GPU host pays; beside it the same loop with a 2-variable model
      and with B2's variables at full size (on a CPU, Adam's arithmetic runs on the host too);
    - input: the cached 128 px records through the trainer's pipeline alone;
    - both together: the trivial model on the cached 128 px records.  On a CPU this last one is
      bound by the model's cast and pooling of every pixel (work a GPU does), so it is shown
      but the target is on the first two: host ceiling = min(loop, input), headroom = host
      ceiling / one H200's EfficientNetB2-128 rate, target >= 10x.
(b) The real step: the configured backbone with the reference augmentation, fed by the input
    pipeline, on this machine's device (on a CPU this measures the CPU, not the loop).
(c) Precise BatchNorm statistics (`--precise_bn_batches`, run before every validation) on the
    same model: seconds per pass, and what that adds to an epoch of this record set and of
    Kermany's 5,216 training films at that batch (model 2: --freeze_fraction=0.7).

On a GPU host, `--device_check` first prints where the augmentation's resample runs and in
which dtype (docs/scaling.md, what only a GPU can confirm).
"""
import dataclasses
import time

import keras
import tensorflow as tf
from absl import flags

from benchmarks import common
from cxr_fast import entry
from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from cxr_fast.data import pipeline, recordset
from cxr_fast.distributed import strategy as strategy_lib
from cxr_fast.tasks import task as task_lib
from cxr_fast.training import augment
from cxr_fast.training import model as model_lib
from cxr_fast.training.steps import Steps

# One H200 training EfficientNetB2 at 128 px, float32, batch 64: ~5,800 img/s (measured with
# Keras on JAX, not on this project's machines; see docs/benchmarks.md).
H200_B2_128_IMG_PER_S = 5800.0
HEADROOM_TARGET = 10.0


def _rate(steps, iterator, seconds, steps_per_loop):
    steps.train_loop(iterator, tf.constant(steps_per_loop), tf.constant(0, tf.int64)).numpy()  # trace, warm up
    images, calls, start = 0, 1, time.perf_counter()
    while time.perf_counter() - start < seconds or images == 0:
        totals = steps.train_loop(iterator, tf.constant(steps_per_loop), tf.constant(calls * steps_per_loop, tf.int64))
        images += int(totals.numpy()[3])
        calls += 1
    return images / (time.perf_counter() - start)


def trivial_model(config):
    """Global average pool + dense: the loop's own cost dominates."""
    inputs = keras.Input((config.image_size, config.image_size, config.channels), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="trivial")
    return model, model


class HeldVariables(keras.layers.Layer):
    """Holds variables of the given shapes and adds the sum of their means to its input: every
    variable gets a gradient (a broadcast) and an optimizer update, at almost no arithmetic."""

    def __init__(self, shapes, **kwargs):
        super().__init__(**kwargs)
        self.shapes = [tuple(shape) for shape in shapes]

    def build(self, input_shape):
        self.held = [self.add_weight(shape=shape, initializer="zeros", name=f"held{i}")
                     for i, shape in enumerate(self.shapes)]

    def call(self, inputs):
        return inputs + keras.ops.sum(keras.ops.stack([keras.ops.mean(w) for w in self.held]))


def trainable_shapes(model_config):
    """The shapes of the real model's trainable variables (the backbone built at 32 px, no weights)."""
    model, _ = model_lib.build_model(dataclasses.replace(model_config, image_size=32, weights="none"))
    return [tuple(w.shape) for w in model.trainable_weights]


def variables_proxy(shapes):
    """`build_model` for Steps: global average pool -> the real model's trainable variables, held
    (`HeldVariables`) -> dense.  Per step: the loop, a gradient and an Adam update of every variable
    of the real model (EfficientNetB2 + head: 305 variables, 7.9 M values), without its convolutions."""
    def build(config):
        inputs = keras.Input((config.image_size, config.image_size, config.channels), name="image")
        x = HeldVariables(shapes, name="held")(keras.layers.GlobalAveragePooling2D()(inputs))
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
        model = keras.Model(inputs, outputs, name="variables_proxy")
        return model, model

    return build


def device_check(log=print):
    """Where ImageProjectiveTransformV3 executes for the trainer's float32 augmentation, and for
    bfloat16 (which has no GPU kernel: with soft placement it falls back to the host)."""
    device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
    with tf.device(device):
        images = tf.zeros([64, 128, 128, 1], tf.uint8)
        layer = augment.Augmentation(AugmentConfig())
        out = layer(images, training=True, seed=tf.constant([0, 0], tf.int64))
        log(f"augmentation on {device}: output {out.dtype.name} on {out.device}")
        for dtype in (tf.float32, tf.bfloat16):
            try:
                resampled = tf.raw_ops.ImageProjectiveTransformV3(
                    images=tf.cast(images, dtype), transforms=tf.constant([[1.0, 0, 0, 0, 1.0, 0, 0, 0]]),
                    output_shape=tf.constant([128, 128]), fill_value=tf.constant(0.0), interpolation="BILINEAR")
                log(f"ImageProjectiveTransformV3 {dtype.name}: ran on {resampled.device}")
            except tf.errors.NotFoundError as err:
                log(f"ImageProjectiveTransformV3 {dtype.name}: no kernel ({err.message.splitlines()[0][:120]})")


# The training split the reference used (Kermany's train folder).
KERMANY_TRAIN_FILMS = 5216


def _setup(data_dir, backbone, image_size, batch, augment, cache, freeze_fraction=0.0, strategy="auto"):
    config = TrainConfig(model_dir="unused", data=DataConfig(data_dir=data_dir, image_size=image_size,
                                                             global_batch_size=batch, cache=cache),
                         model=ModelConfig(backbone=backbone, image_size=image_size, weights="none",
                                           freeze_fraction=freeze_fraction),
                         augment=AugmentConfig(kind=augment))
    record_set = recordset.open_record_set(data_dir)
    strategy = strategy_lib.make_strategy(strategy)
    # A dataset, not an iterator: iterating starts the pipeline's threads, which must not run
    # while another variant is measured.
    dataset = strategy.distribute_datasets_from_function(pipeline.dataset_fn(record_set, config.data))
    return config, strategy, record_set, dataset


def _resident_rate(config, strategy, weights, build_model, batch, seconds, steps_per_loop):
    """The trainer's loop on one resident batch of 8 px images (no input, no per-pixel work)."""
    small = dataclasses.replace(config, data=dataclasses.replace(config.data, image_size=8),
                                model=dataclasses.replace(config.model, image_size=8))
    steps = Steps(small, strategy, weights, build_model=build_model)
    resident = (tf.zeros([batch, 8, 8, 1], tf.uint8), tf.cast(tf.range(batch) % 2, tf.float32))
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(resident).repeat()))
    return _rate(steps, iterator, seconds, steps_per_loop)


def loop_overhead(data_dir, seconds, image_size=128, batch=256, steps_per_loop=50, log=print,
                  variables_of="B2", strategy="auto"):
    """(a): the loop's fixed cost with the real model's variables, the cached input alone, the trivial
    model on that input; and the host ceiling's headroom.

    A step costs the host the loop and, per trainable variable of `variables_of` (EfficientNetB2
    with the reference head: 305) and per replica, a gradient and an Adam update to dispatch,
    whatever the accelerator.  Measured three ways on 8 px resident batches: a 2-variable model;
    the real variables at full size (on a CPU Adam's arithmetic over 7.7 M values runs here too,
    work a GPU does); the same number of variables of one value each: the per-variable dispatch
    alone, the host's share on a GPU host, on which the ceiling rests.
    """
    config, strategy, record_set, dataset = _setup(data_dir, "tiny", image_size, batch, "none", "memory",
                                                   strategy=strategy)
    weights = task_lib.for_record_set(record_set).class_weights(record_set, "balanced")
    replicas = strategy.num_replicas_in_sync
    settings = {"batch": batch, "augment": "none", "steps_per_loop": steps_per_loop, "replicas": replicas,
                "image_size": 8, "cache": "resident"}
    shapes = trainable_shapes(dataclasses.replace(config.model, backbone=variables_of))
    name, count = model_lib.backbone_name(variables_of), len(shapes)
    rates = {kind: _resident_rate(config, strategy, weights, build, batch, seconds, steps_per_loop)
             for kind, build in (("trivial", trivial_model), ("full", variables_proxy(shapes)),
                                 ("dispatch", variables_proxy([(1,)] * count)))}
    feed = common.dataset_images_per_second(pipeline.train_dataset(record_set, config.data), seconds,
                                            batches_per_call=steps_per_loop)
    both = _rate(Steps(config, strategy, weights, build_model=trivial_model), iter(dataset), seconds, steps_per_loop)
    ceiling = min(rates["dispatch"], feed)
    headroom = ceiling / H200_B2_128_IMG_PER_S
    log(f"loop on {replicas} replica(s), 8 px resident batch of {batch}: {rates['trivial']:,.0f} img/s with 2 variables, "
        f"{rates['full']:,.0f} with {name}'s {count} (Adam's arithmetic on this CPU), {rates['dispatch']:,.0f} with "
        f"{count} of one value (dispatch); cached {image_size} px input alone: {feed:,.0f} img/s; trivial model on "
        f"that input: {both:,.0f} img/s; host ceiling {ceiling:,.0f} img/s = {headroom:.1f}x one H200's B2-128 rate")
    return [{"name": "train loop, 2-variable model, 8 px resident batch", "img_per_s": rates["trivial"],
             "settings": {**settings, "model": "global average pool + dense"}},
            {"name": f"train loop, {name}'s {count} variables + Adam, 8 px resident batch", "img_per_s": rates["full"],
             "settings": {**settings, "model": f"{name}'s trainable variables held", "variables": count}},
            {"name": f"train loop fixed cost, {count} one-value variables + Adam, 8 px resident batch",
             "img_per_s": rates["dispatch"],
             "settings": {**settings, "model": f"as many variables as {name}'s, one value each", "variables": count}},
            {"name": f"cached {image_size} px input alone", "img_per_s": feed,
             "settings": {**settings, "image_size": image_size, "cache": "memory"}},
            {"name": f"train loop + trivial model on cached {image_size} px input", "img_per_s": both,
             "settings": {**settings, "model": "global average pool + dense", "image_size": image_size,
                          "cache": "memory"}},
            {"name": "host ceiling = min(fixed cost, input)", "img_per_s": ceiling, "headroom_over_h200_b2": headroom,
             "settings": {"replicas": replicas,
                          "target": f">= {HEADROOM_TARGET:g}x {H200_B2_128_IMG_PER_S:,.0f}"}}]


def precise_statistics_cost(steps, strategy, record_set, config, batches, step_rate, log=print):
    """(c): one precise-statistics pass of `batches` batches (after a warm-up pass), and its share of an epoch."""
    sample = strategy.distribute_datasets_from_function(
        lambda context: pipeline.statistics_sample(record_set, config.data, batches, context))
    steps.statistics.precise(iter(sample), batches)  # trace, warm up
    start = time.perf_counter()
    steps.statistics.precise(iter(sample), batches)
    seconds = time.perf_counter() - start
    batch = config.data.global_batch_size
    epoch = {name: count // batch / (step_rate / batch) for name, count in
             (("records", record_set.num_records("train")), ("kermany", KERMANY_TRAIN_FILMS))}
    share = {name: seconds / value for name, value in epoch.items()}
    log(f"precise BatchNorm statistics, {batches} batches of {batch}: {seconds:.2f} s per pass = "
        f"+{100 * share['records']:.1f}% of an epoch of the {record_set.num_records('train'):,} training records, "
        f"+{100 * share['kermany']:.1f}% of one of Kermany's {KERMANY_TRAIN_FILMS:,}")
    return {"name": f"precise BatchNorm statistics ({batches} batches)", "img_per_s": batches * batch / seconds,
            "seconds_per_pass": seconds, "epoch_share": share["records"], "kermany_epoch_share": share["kermany"]}


def run(data_dir, seconds, backbone="B2", image_size=128, batch=64, steps_per_loop=1, log=print,
        overhead_batch=256, overhead_steps_per_loop=50, freeze_fraction=0.0, precise_bn_batches=8, strategy="auto"):
    overhead = loop_overhead(data_dir, seconds, image_size, overhead_batch, overhead_steps_per_loop, log,
                             strategy=strategy)
    config, strategy, record_set, dataset = _setup(data_dir, backbone, image_size, batch, "reference", "auto",
                                                   freeze_fraction, strategy)
    steps = Steps(config, strategy, task_lib.for_record_set(record_set).class_weights(record_set, "balanced"), strategy_lib.choose_precision("auto"),
                  strategy_lib.choose_jit("auto"))
    step = _rate(steps, iter(dataset), seconds, steps_per_loop)
    log(f"train step fed by the input pipeline: {step:,.1f} img/s")
    settings = {"backbone": backbone, "image_size": image_size, "batch": batch, "augment": "reference fused",
                "replicas": strategy.num_replicas_in_sync,
                "freeze_fraction": freeze_fraction, "steps_per_loop": steps_per_loop, "cache": "auto",
                "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU"}
    variants = [*overhead, {"name": "train step, input pipeline", "img_per_s": step, "settings": settings}]
    if precise_bn_batches:
        variants.append({**precise_statistics_cost(steps, strategy, record_set, config, precise_bn_batches, step, log),
                         "settings": settings})
    return {"variants": variants, "step_img_per_s": step,
            "loop_headroom_over_h200_b2": overhead[-1]["headroom_over_h200_b2"],
            "headroom_target": HEADROOM_TARGET}


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if FLAGS.device_check:
        device_check()
    result = run(FLAGS.data_dir, FLAGS.seconds, FLAGS.backbone, FLAGS.image_size, FLAGS.batch_size,
                 FLAGS.steps_per_loop, freeze_fraction=FLAGS.freeze_fraction,
                 precise_bn_batches=FLAGS.precise_bn_batches, strategy=FLAGS.strategy)
    print(common.table(result["variants"]))
    print(f"the host side sustains {result['loop_headroom_over_h200_b2']:.1f}x one H200's EfficientNetB2-128 rate "
          f"(target >= {HEADROOM_TARGET:g}x)")
    common.write_json(FLAGS.json, {"benchmark": "train_step", "machine": common.machine(), **result})


if __name__ == "__main__":
    flags.DEFINE_string("data_dir", None, "Record set (tools.make_tfrecords).")
    flags.DEFINE_float("seconds", 20.0, "Measuring window per variant, after warm-up.")
    flags.DEFINE_string("backbone", "B2", "Backbone of the real step (b).")
    flags.DEFINE_integer("image_size", 128, "Model input size.")
    flags.DEFINE_integer("batch_size", 64, "Global batch size of the real step (b).")
    flags.DEFINE_integer("steps_per_loop", 1, "Steps per tf.function call of the real step (b).")
    flags.DEFINE_float("freeze_fraction", 0.0, "Frozen share of the backbone in (b) and (c); model 2: 0.7.")
    flags.DEFINE_integer("precise_bn_batches", 8, "Batches of the precise-statistics pass (c); 0 skips it.")
    flags.DEFINE_string("json", None, "Write the results here as JSON.")
    flags.DEFINE_bool("device_check", False, "First print where the augmentation's resample op runs.")
    flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored"], "As cxr_fast.train's; with "
                      "CXR_FAST_CPU_DEVICES=N and mirrored, N replicas on a CPU.")
    flags.mark_flags_as_required(["data_dir"])
    entry.run_main(main)
