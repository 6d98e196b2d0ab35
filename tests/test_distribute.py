"""Strategy, precision and XLA choices on this (CPU) machine, and who writes."""
import os

import pytest
import tensorflow as tf

from cxr_fast import distribute
from cxr_fast.errors import InputError


def test_cpu_defaults_are_float32_without_xla():
    assert not tf.config.list_physical_devices("GPU")
    assert distribute.choose_precision("auto") == "float32"
    assert distribute.choose_jit("auto") is False
    assert distribute.choose_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert distribute.choose_jit("on") is True


def test_auto_strategy_is_one_device_and_chief():
    strategy = distribute.make_strategy("auto")
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert distribute.is_chief(strategy)


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(InputError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InputError, match="TF_CONFIG is not valid JSON"):
        distribute.make_strategy("multi_worker")


def test_write_dir_is_private_off_the_chief(tmp_path):
    chief = distribute.WriteDir(str(tmp_path), chief=True)
    assert chief.path == str(tmp_path)
    worker = distribute.WriteDir(str(tmp_path), chief=False)
    assert worker.path != str(tmp_path) and os.path.isdir(worker.path)
    worker.cleanup()
    chief.cleanup()
    assert not os.path.exists(worker.path) and os.path.isdir(tmp_path)
