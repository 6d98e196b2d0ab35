"""The tf.data pipelines: shapes and dtypes, every record once, caching, distribution, bad input."""
import collections
import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import hostile
from cli import ROOT
from cxr_fast.config import DataConfig
from cxr_fast.data import pipeline, recordset, schema
from cxr_fast.errors import InputError


def _config(records_dir, **overrides):
    settings = dict(data_dir=records_dir, image_size=32, global_batch_size=8, shuffle_buffer=64)
    settings.update(overrides)
    return DataConfig(**settings)


def _digest(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _eval_rows(record_set, split, config):
    rows = []
    for images, labels, meta in pipeline.eval_dataset(record_set, split, config, with_metadata=True):
        rows += [(f.decode(), int(l), _digest(i)) for f, l, i in zip(meta["filename"].numpy(), labels.numpy(),
                                                                     images.numpy())]
    return rows


def test_eval_sees_every_record_once_in_file_order(records_dir):
    record_set = recordset.open_record_set(records_dir)
    config = _config(records_dir, global_batch_size=7)
    rows = _eval_rows(record_set, "val", config)
    assert len(rows) == record_set.num_records("val")  # last partial batch kept
    expected = []
    for batch in tf.data.TFRecordDataset(list(record_set.files["val"])).batch(100):
        expected += [f.decode() for f in schema.parse_batch(batch, [schema.FILENAME])[schema.FILENAME].numpy()]
    assert [r[0] for r in rows] == expected
    assert sum(r[1] for r in rows) == record_set.class_counts("val")[1]


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_train_batches_cover_the_split(records_dir, cache):
    record_set = recordset.open_record_set(records_dir)
    config = _config(records_dir, cache=cache, shuffle_buffer=10_000)
    train = set(r[2] for r in _eval_rows(record_set, "train", config))
    seen = collections.Counter()
    epoch_batches = record_set.num_records("train") // 8
    for images, labels in pipeline.train_dataset(record_set, config).take(epoch_batches * 2):
        assert images.dtype == tf.uint8 and images.shape == (8, 32, 32, 1)
        assert labels.dtype == tf.float32 and labels.shape == (8,)
        seen.update(_digest(i) for i in images.numpy())
    assert set(seen) <= train
    assert len(seen) >= 0.9 * len(train)  # two epochs reach (nearly) every record


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_each_epoch_is_a_function_of_seed_and_epoch(records_dir, cache):
    # What exact resume rests on: the stream started at (epoch 1, step 2) is the uninterrupted
    # stream from that point on, and epochs differ from each other and with the seed.
    record_set = recordset.open_record_set(records_dir)
    config = _config(records_dir, cache=cache)

    def stream(config, start=(0, 0), epochs=3):
        batches = pipeline.train_dataset(record_set, config, epochs=epochs, start=start, steps_per_epoch=4)
        return [tuple(_digest(i) for i in images.numpy()) for images, _ in batches]

    full = stream(config)
    assert len(full) == 12 and full[:4] != full[4:8]
    assert stream(config, start=(1, 2), epochs=2) == full[6:]
    assert stream(config) == full  # the same again
    assert stream(_config(records_dir, cache=cache, seed=7))[:4] != full[:4]


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_an_epoch_holds_no_record_twice(records_dir, cache):
    # Each epoch is one pass in its own order; only an epoch longer than the split starts a
    # second pass (and then holds every record before any repeats).
    record_set = recordset.open_record_set(records_dir)
    config = _config(records_dir, cache=cache)
    records = record_set.num_records("train")
    assert len(set(r[2] for r in _eval_rows(record_set, "train", config))) == records  # distinct images
    steps = records // 8
    for epoch in range(2):
        batches = pipeline.train_dataset(record_set, config, epochs=1, start=(epoch, 0), steps_per_epoch=steps)
        digests = [_digest(i) for images, _ in batches for i in images.numpy()]
        assert len(digests) == steps * 8 and len(set(digests)) == len(digests)
    longer = pipeline.train_dataset(record_set, config, epochs=1, steps_per_epoch=steps + records // 8 + 1)
    digests = [_digest(i) for images, _ in longer for i in images.numpy()]
    assert len(set(digests[:records])) == records


def test_cache_decision_follows_the_budget(records_dir):
    record_set = recordset.open_record_set(records_dir)
    assert pipeline.cache_fits(record_set, _config(records_dir, cache="auto"))
    assert not pipeline.cache_fits(record_set, _config(records_dir, cache="auto", cache_budget_mb=0))
    assert not pipeline.cache_fits(record_set, _config(records_dir, cache="none"))


def test_three_channels_and_resize(records_dir):
    record_set = recordset.open_record_set(records_dir)
    images, _ = next(iter(pipeline.train_dataset(record_set, _config(records_dir, channels=3, image_size=20))))
    assert images.shape == (8, 20, 20, 3) and images.dtype == tf.uint8
    np.testing.assert_array_equal(images[..., 0].numpy(), images[..., 2].numpy())


def test_distributed_pipelines_read_disjoint_files(records_dir):
    record_set = recordset.open_record_set(records_dir)
    assert len(record_set.files["train"]) >= 2
    config = _config(records_dir, cache="none", global_batch_size=8)
    make = pipeline.dataset_fn(record_set, config)
    digests = []
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index, num_replicas_in_sync=2)
        batches = list(make(context).take(10))
        assert batches[0][0].shape[0] == 4  # per-replica batch
        digests.append({_digest(i) for images, _ in batches for i in images.numpy()})
    assert digests[0] and digests[1] and not digests[0] & digests[1]


def test_too_few_shards_for_the_pipelines(records_dir):
    record_set = recordset.open_record_set(records_dir)
    pipelines = len(record_set.files["train"]) + 1
    context = tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=0,
                                         num_replicas_in_sync=pipelines)
    with pytest.raises(InputError, match=f"--min_shards={10 * pipelines}"):
        pipeline.train_dataset(record_set, _config(records_dir), context)


def test_changed_shard_fails_verification_only(copy_of):
    shard = os.path.join(copy_of, sorted(f for f in os.listdir(copy_of) if f.startswith("test-"))[0])
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    open(shard, "wb").write(bytes(data))
    recordset.open_record_set(copy_of)  # size check alone cannot see it
    with pytest.raises(InputError, match=f"{os.path.basename(shard)} does not match its sha256"):
        recordset.open_record_set(copy_of, verify=True)
    record_set = recordset.open_record_set(copy_of)
    with pytest.raises(InputError, match="corrupt"):
        with pipeline.readable_errors(record_set.root):
            for _ in pipeline.eval_dataset(record_set, "test", _config(copy_of)):
                pass


@pytest.mark.parametrize("cache, emptied", [("memory", "all"), ("none", "all"), ("memory", "one")])
def test_train_shards_that_yield_fewer_records_than_counted_are_one_error(copy_of, cache, emptied):
    hostile.empty_train_shards(copy_of, emptied)
    record_set = recordset.open_record_set(copy_of)
    with pytest.raises(InputError, match="fewer records than manifest.json counts"):
        with pipeline.readable_errors(record_set.root):
            for _ in pipeline.train_dataset(record_set, _config(copy_of, cache=cache), epochs=2):
                pass


def test_records_of_another_size_than_the_manifest_are_named(copy_of):
    path = os.path.join(copy_of, "manifest.json")
    manifest = json.load(open(path))
    manifest["image"]["height"] = manifest["image"]["width"] = 24
    json.dump(manifest, open(path, "w"))
    record_set = recordset.open_record_set(copy_of)
    with pytest.raises(InputError, match=r"image size differs from manifest.json \(chest_xray/.*\.jpeg"):
        with pipeline.readable_errors(record_set.root):
            next(iter(pipeline.eval_dataset(record_set, "val", _config(copy_of))))


def test_missing_split_and_manifest(records_dir, tmp_path):
    with pytest.raises(InputError, match="manifest.json not found"):
        recordset.open_record_set(str(tmp_path))
    record_set = recordset.open_record_set(records_dir)
    empty = dataclasses.replace(record_set, files={"train": record_set.files["train"]})
    with pytest.raises(InputError, match="no val shards"):
        pipeline.eval_dataset(empty, "val", _config(records_dir))


def test_an_epoch_is_one_pass_on_1_2_4_and_8_replicas(records_dir):
    """One input pipeline feeding R replicas (an R-GPU host, here R logical CPUs): every epoch lasts
    the same global steps, holds every drawn record once, resumes mid-epoch onto the same batches,
    and precise BatchNorm's sample holds its global batches."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CXR_FAST_CPU_DEVICES="8")
    batch = 8
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "helpers", "pipeline_replicas.py"),
                             records_dir, str(batch)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    per_epoch = recordset.open_record_set(records_dir).num_records("train") // batch
    assert per_epoch >= 2
    for replicas, modes in report.items():
        for cache, seen in modes.items():
            where = f"{replicas} replicas, cache={cache}"
            assert seen["steps"] == per_epoch, where
            assert seen["drawn"] == [per_epoch * batch] * 2, where
            assert seen["distinct"] == seen["drawn"], where  # no record twice in an epoch
            assert seen["resume_matches"], where
            assert (seen["sample_steps"], seen["sample_batch"]) == (2, batch), where
