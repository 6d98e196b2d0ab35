"""A multi-worker process (TF_CONFIG set by cxr_fast.distributed.cluster): prints, as JSON, a digest
of the augmented batch its replica draws at step 0 for the same images on every worker, and the
digest of a second draw at the same step (it must repeat)."""
import hashlib
import json

import numpy as np
import tensorflow as tf

from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from cxr_fast.distributed import strategy as strategy_lib
from cxr_fast.training.steps import Steps

strategy = strategy_lib.make_strategy("multi_worker", collective_timeout_secs=60)
config = TrainConfig(model_dir="unused", data=DataConfig(data_dir="unused", image_size=32, global_batch_size=8),
                     model=ModelConfig(backbone="tiny", image_size=32, weights="none"), augment=AugmentConfig(),
                     seed=3)
steps = Steps(config, strategy, [1.0, 1.0])
images = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1)), tf.uint8)


@tf.function
def draw(step):
    return strategy.run(lambda: steps.replica_inputs(images, step))


def digest(value):
    local = strategy.experimental_local_results(value)[0]
    return hashlib.sha256(np.asarray(local).tobytes()).hexdigest()


first, again = digest(draw(tf.constant(0, tf.int64))), digest(draw(tf.constant(0, tf.int64)))
print(json.dumps({"digest": first, "repeats": first == again}), flush=True)
