"""The record layout: write with make_example, read back with parse_batch and decode_images."""
import numpy as np
import pytest
import tensorflow as tf

from cxr_fast.data import imaging, schema


@pytest.mark.parametrize("encoding", imaging.ENCODINGS)
def test_example_round_trip(encoding):
    rng = np.random.default_rng(0)
    grays = [rng.integers(0, 256, (24, 24), dtype=np.uint8) for _ in range(3)]
    records = [schema.make_example(encoded=imaging.encode(g, encoding), encoding=encoding, height=24, width=24,
                                   label=i % 2, class_text=["NORMAL", "PNEUMONIA"][i % 2], filename=f"f{i}.jpeg",
                                   patient=f"p{i}", sha1="ab" * 20) for i, g in enumerate(grays)]
    features = schema.parse_batch(tf.constant(records))
    assert features[schema.LABEL].numpy().tolist() == [0, 1, 0]
    assert [f.decode() for f in features[schema.FILENAME].numpy()] == ["f0.jpeg", "f1.jpeg", "f2.jpeg"]
    assert features[schema.FORMAT].numpy()[0].decode() == encoding
    images = schema.decode_images(features[schema.ENCODED], encoding, 24, 24)
    assert images.shape == (3, 24, 24, 1) and images.dtype == tf.uint8
    tolerance = 0 if encoding != "jpeg" else 40  # noise is JPEG's worst case
    np.testing.assert_allclose(images.numpy()[..., 0].astype(int), np.stack(grays).astype(int), atol=tolerance)


def test_parse_batch_subset_of_keys():
    record = schema.make_example(encoded=b"\x00" * 4, encoding="raw", height=2, width=2, label=1,
                                 class_text="PNEUMONIA", filename="a", patient="p", sha1="s")
    features = schema.parse_batch(tf.constant([record]), keys=[schema.LABEL])
    assert list(features) == [schema.LABEL]


def test_shard_names():
    assert schema.shard_name("train", 3, 12) == "train-00003-of-00012.tfrecord"


