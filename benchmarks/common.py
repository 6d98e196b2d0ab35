"""Timing, machine description and result output shared by the benchmarks.

Every benchmark warms up first (graph tracing, thread pools, caches), then counts images over
a fixed wall-clock window, and reports images/s beside the settings that produced it.
"""
import datetime
import gc
import os
import platform
import time

import tensorflow as tf

from cxr_fast import atomic
from cxr_fast.training.loop import GPU_STEPS_PER_LOOP


def images_per_second(batches, seconds, warmup_batches=3):
    """Images/s of an iterable of batches (arrays or (images, labels) tuples) after warm-up."""
    iterator = iter(batches)
    for _ in range(warmup_batches):
        next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(iterator)
        count += len(batch[0] if isinstance(batch, (tuple, list)) else batch)
    return count / (time.perf_counter() - start)


def batch_puller(dataset, batches_per_call):
    """A function pulling `batches_per_call` batches of `dataset` per call; returns their images.

    The trainer pulls `steps_per_loop` batches inside one tf.function; doing the same here
    measures the pipeline instead of Python's ~0.2 ms per `next()` on an eager iterator.
    """
    iterator = iter(dataset)

    @tf.function
    def pull():
        images = 0
        for _ in tf.range(batches_per_call):
            batch = next(iterator)
            images += tf.shape(batch[0])[0]
        return images

    return pull


def dataset_images_per_second(dataset, seconds, batches_per_call=GPU_STEPS_PER_LOOP):
    """Images/s of a tf.data pipeline consumed as the trainer on a GPU consumes it (`batch_puller`:
    its default steps per tf.function call)."""
    return alternating_rates([dataset], seconds, 1, batches_per_call)[0][0]


def alternating_rates(datasets, seconds, rounds, batches_per_call=GPU_STEPS_PER_LOOP):
    """Images/s of each dataset in `rounds` windows of `seconds`, taken in turn (A B A B ...), so a
    ratio of two is measured under the same load; [[rate per round] per dataset]."""
    pulls = [batch_puller(dataset, batches_per_call) for dataset in datasets]
    for pull in pulls:
        pull()  # trace and warm up
    rates = [[] for _ in pulls]
    for _ in range(rounds):
        for pull, measured in zip(pulls, rates):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                count += int(pull())
            measured.append(count / (time.perf_counter() - start))
    del pulls, pull
    # The tf.functions hold their iterators in reference cycles: collect them now, so their threads,
    # buffers and caches stop before the next variant is measured (seen: 100 threads left after 5).
    gc.collect()
    return rates


def call_rate(fn, seconds, warmup_calls=2):
    """Calls/s of a function (e.g. one compiled step), after warm-up."""
    for _ in range(warmup_calls):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def machine():
    return {
        "cores": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "date": datetime.date.today().isoformat(),
    }


def table(variants, reference_key="ratio_to_reference"):
    """A fixed-width text table of variants: name, img/s, ratio, cores, settings."""
    rows = [("variant", "img/s", "x ref", "cores", "settings")]
    for v in variants:
        ratio = v.get(reference_key)
        settings = ", ".join(f"{k}={val}" for k, val in v.get("settings", {}).items())
        rows.append((v["name"], f"{v['img_per_s']:,.0f}", "-" if ratio is None else f"{ratio:,.1f}",
                     str(v.get("cores", "")), settings))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:4], widths[1:])), r[4]])
                     for r in rows)


def write_json(path, payload):
    if path:
        atomic.write_json(path, payload)
