"""A multi-worker process (TF_CONFIG set by cxr_fast.distributed.cluster); prints one JSON line:
- collectives, timeout: the implementation and timeout the built strategy uses (default flags);
- digest: of the augmented batch its replica draws at step 0 for the same images on every worker,
  and repeats: whether a second draw at the same step gives the same batch;
- statistics: digest of every BatchNorm moving mean and variance after precise statistics on
  batches that differ per worker, and pooled: whether the first layer's equal the population
  statistics of both workers' images together."""
import hashlib
import json

import numpy as np
import tensorflow as tf

from bn_probe import first_bn_population, first_bn_statistics
from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from cxr_fast.distributed import strategy as strategy_lib
from cxr_fast.training.steps import Steps

strategy = strategy_lib.make_strategy("multi_worker")
config = TrainConfig(model_dir="unused", data=DataConfig(data_dir="unused", image_size=32, global_batch_size=8),
                     model=ModelConfig(backbone="tiny", image_size=32, weights="none"), augment=AugmentConfig(),
                     seed=3)
steps = Steps(config, strategy, [1.0, 1.0])
images = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1)), tf.uint8)


@tf.function
def draw(step):
    return strategy.run(lambda: steps.replica_inputs(images, step))


def digest(values):
    return hashlib.sha256(b"".join(np.asarray(v).tobytes() for v in values)).hexdigest()


first = digest([strategy.experimental_local_results(draw(tf.constant(0, tf.int64)))[0]])
again = digest([strategy.experimental_local_results(draw(tf.constant(0, tf.int64)))[0]])

# Precise statistics: 2 batches of 4 per worker, different on each worker.
worker = strategy.cluster_resolver.task_id
own = [np.random.default_rng(10 + w).integers(0, 256, (8, 32, 32, 1)).astype(np.uint8) for w in range(2)]
distributed = strategy.distribute_datasets_from_function(  # per replica, not re-sharded
    lambda _: tf.data.Dataset.from_tensor_slices((own[worker], np.zeros(8, np.float32))).batch(4))
steps.statistics.precise(iter(distributed), 2)
expected = first_bn_population(steps, np.concatenate(own))
pooled = all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(first_bn_statistics(steps), expected))
statistics = digest([v.value for layer in steps.backbone.layers if hasattr(layer, "moving_mean")
                     for v in (layer.moving_mean, layer.moving_variance)])
options = strategy.extended._communication_options  # what the strategy was built with (no public reader)
print(json.dumps({"digest": first, "repeats": first == again, "statistics": statistics, "pooled": pooled,
                  "collectives": options.implementation.name, "timeout": options.timeout_seconds}), flush=True)
