"""Run as a script with CXR_FAST_CPU_DEVICES=8 (devices must be set before TensorFlow starts):
the trainer's input (`pipeline.dataset_fn` through `distribute_datasets_from_function`, one input
pipeline feeding R replicas, as on one R-GPU host) on 1, 2, 4 and 8 replicas, printed as one JSON line.

    python pipeline_replicas.py RECORDS BATCH  ->  {"8": {"auto": {...}, "none": {...}}, ...}

Per replica count and cache mode: global steps per epoch (two epochs read to their end), images
drawn and distinct per epoch, whether a stream resumed at (epoch 1, step 1) reads what the
uninterrupted one read from there, and how many global steps the precise-BatchNorm sample holds.
"""
import dataclasses
import hashlib
import json
import sys

from cxr_fast import topology

topology.apply()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cxr_fast.config import DataConfig  # noqa: E402
from cxr_fast.data import pipeline, recordset  # noqa: E402

RECORDS, BATCH = sys.argv[1], int(sys.argv[2])
DEVICES = [d.name for d in tf.config.list_logical_devices("CPU")]


def global_steps(strategy, dataset_fn):
    """Every global step of a distributed dataset, as the image digests of its global batch in replica order."""
    steps = []
    for images, _ in strategy.distribute_datasets_from_function(dataset_fn):
        local = [np.asarray(part) for part in strategy.experimental_local_results(images)]
        steps.append([hashlib.sha1(image.tobytes()).hexdigest() for part in local for image in part])
    return steps


def measure(replicas, cache):
    strategy = tf.distribute.MirroredStrategy(DEVICES[:replicas])
    record_set = recordset.open_record_set(RECORDS)
    config = DataConfig(data_dir=RECORDS, image_size=32, global_batch_size=BATCH, cache=cache, shuffle_buffer=64)
    per_epoch = record_set.num_records("train") // BATCH
    both = global_steps(strategy, lambda context: pipeline.train_dataset(record_set, config, context, epochs=2))
    resumed = global_steps(strategy, lambda context: pipeline.train_dataset(record_set, config, context, epochs=1,
                                                                            start=(1, 1)))
    sample = global_steps(strategy, lambda context: pipeline.statistics_sample(
        record_set, dataclasses.replace(config, cache="none"), 2, context))
    epochs = [both[:per_epoch], both[per_epoch:]]
    return {"steps": len(both) / 2, "expected_steps": per_epoch,
            "drawn": [sum(len(step) for step in epoch) for epoch in epochs],
            "distinct": [len({image for step in epoch for image in step}) for epoch in epochs],
            "resume_matches": resumed == both[per_epoch + 1:], "sample_steps": len(sample),
            "sample_batch": len(sample[0]) if sample else 0}


print(json.dumps({str(r): {cache: measure(r, cache) for cache in ("auto", "none")} for r in (1, 2, 4, 8)}))
