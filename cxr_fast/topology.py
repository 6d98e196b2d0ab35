"""The topology switch: run any entry point as on a host with N accelerators, on a CPU.

    CXR_FAST_CPU_DEVICES=4 python -m cxr_fast.train --strategy=mirrored ...

splits the CPU into N logical devices before TensorFlow builds its devices, so
`--strategy=mirrored` (what `auto` picks on a multi-GPU host) runs N replicas fed by one input
pipeline, and `--strategy=multi_worker` mirrors over N replicas per worker, exactly the
topology of one 8-GPU host or of several.  For tests and debugging on machines without GPUs;
it changes nothing where GPUs are visible, and nothing when the variable is unset.

Read in one place, `apply()`, which `entry.run_main` calls before any entry point's `main`
(and so before TensorFlow is imported there); TensorFlow is imported only when the variable is
set.  Library code asks `cpu_devices()`.
"""
import os

from cxr_fast.errors import InputError

ENV = "CXR_FAST_CPU_DEVICES"
MAX_DEVICES = 64


def cpu_devices(environ=None):
    """N from CXR_FAST_CPU_DEVICES (0 when unset or empty); an InputError naming it when not 1..64."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit() or not 1 <= int(value) <= MAX_DEVICES:
        raise InputError(f"{ENV}={value} must be a number of logical CPU devices in 1..{MAX_DEVICES}, "
                         "or unset")
    return int(value)


def apply(environ=None):
    """Splits the CPU into the requested logical devices (no-op when unset); returns their count."""
    count = cpu_devices(environ)
    if not count:
        return 0
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return 0  # real accelerators: the switch is for CPU-only machines
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow already built its devices (a second call in one process)
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise InputError(f"{ENV}={count} came after TensorFlow had built its devices; set it before "
                             "the process starts") from None
    return count
