"""How input-bound training is: the same train step fed from a batch already in device memory
and from the real input pipeline, in one run.

    python -m benchmarks.train_step --data_dir=records/kermany128 --seconds=60 --json=train_step.json

Both use `cxr_fast.training.steps.Steps` (the trainer's own step, augmentation included) and its
`train_loop`; the ratio (b)/(a) is the share of device speed that the pipeline sustains.
Target: >= 97% with EfficientNetB2 at 128 px on this CPU.
"""
import time

import tensorflow as tf
from absl import app, flags

from benchmarks import common
from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from cxr_fast.data import pipeline
from cxr_fast.distributed import strategy as strategy_lib
from cxr_fast.training import loop
from cxr_fast.training.steps import Steps


def _rate(steps, iterator, seconds, steps_per_loop):
    steps.train_loop(iterator, tf.constant(1)).numpy()  # trace and warm up
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or images == 0:
        images += int(steps.train_loop(iterator, tf.constant(steps_per_loop)).numpy()[2])
    return images / (time.perf_counter() - start)


def run(data_dir, seconds, backbone="B2", image_size=128, batch=64, steps_per_loop=1, log=print):
    config = TrainConfig(model_dir="unused", data=DataConfig(data_dir=data_dir, image_size=image_size,
                                                             global_batch_size=batch),
                         model=ModelConfig(backbone=backbone, image_size=image_size, weights="none"),
                         augment=AugmentConfig())
    record_set = pipeline.open_record_set(data_dir)
    strategy = strategy_lib.make_strategy("auto")
    steps = Steps(config, strategy, loop.class_weights(record_set, "balanced"),
                  strategy_lib.choose_precision("auto"), strategy_lib.choose_jit("auto"))
    distributed = strategy.distribute_datasets_from_function(pipeline.dataset_fn(record_set, config.data))
    resident = next(iter(pipeline.train_dataset(record_set, config.data)))
    in_memory = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(resident).repeat())
    fed = _rate(steps, iter(in_memory), seconds, steps_per_loop)
    log(f"step fed from a device-resident batch: {fed:,.1f} img/s")
    piped = _rate(steps, iter(distributed), seconds, steps_per_loop)
    log(f"step fed by the input pipeline: {piped:,.1f} img/s")
    settings = {"backbone": backbone, "image_size": image_size, "batch": batch, "augment": "reference fused",
                "steps_per_loop": steps_per_loop, "cache": "auto"}
    return {"variants": [{"name": "train step, resident batch", "img_per_s": fed, "settings": settings},
                         {"name": "train step, input pipeline", "img_per_s": piped, "settings": settings}],
            "pipeline_share_of_resident": piped / fed}


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    result = run(FLAGS.data_dir, FLAGS.seconds, FLAGS.backbone, FLAGS.image_size, FLAGS.batch_size,
                 FLAGS.steps_per_loop)
    print(common.table(result["variants"]))
    print(f"input pipeline sustains {100 * result['pipeline_share_of_resident']:.1f}% of the resident-batch speed")
    common.write_json(FLAGS.json, {"benchmark": "train_step", "machine": common.machine(), **result})


if __name__ == "__main__":
    flags.DEFINE_string("data_dir", None, "Record set (tools.make_tfrecords).")
    flags.DEFINE_float("seconds", 60.0, "Measuring window per variant, after warm-up.")
    flags.DEFINE_string("backbone", "B2", "EfficientNet variant.")
    flags.DEFINE_integer("image_size", 128, "Model input size.")
    flags.DEFINE_integer("batch_size", 64, "Global batch size.")
    flags.DEFINE_integer("steps_per_loop", 1, "Steps per tf.function call.")
    flags.DEFINE_string("json", None, "Write the results here as JSON.")
    flags.mark_flags_as_required(["data_dir"])
    app.run(main)
