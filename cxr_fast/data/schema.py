"""The TFRecord layout: feature keys, parse spec and shard file names of a record set.

The only module that knows how a record is laid out.  `tools.make_tfrecords` writes with
`make_example`; `cxr_fast.data.pipeline` reads with `parse_batch` and `decode_images`.  The
manifest and checksums beside the shards are `cxr_fast.data.recordset`'s (no TensorFlow).
Records hold 1-channel uint8 images; the model's input layer makes the 3 channels it needs.
"""
import tensorflow as tf

from cxr_fast.errors import InputError

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS = "image/channels"
LABEL = "image/class/label"
CLASS_TEXT = "image/class/text"
FILENAME = "image/filename"
PATIENT = "image/patient_id"
SOURCE_SHA1 = "image/source_sha1"
FINDINGS = "image/class/findings"  # multi-label sets only: float per finding, 1 / 0 / -1 (ignored)

FEATURES = {
    ENCODED: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    CHANNELS: tf.io.FixedLenFeature([], tf.int64),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    CLASS_TEXT: tf.io.FixedLenFeature([], tf.string),
    FILENAME: tf.io.FixedLenFeature([], tf.string),
    PATIENT: tf.io.FixedLenFeature([], tf.string),
    SOURCE_SHA1: tf.io.FixedLenFeature([], tf.string),
}


def shard_name(split, index, count):
    """`{split}-{i:05d}-of-{n:05d}.tfrecord`, the contract between writer and reader."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_pattern(split):
    return f"{split}-?????-of-?????.tfrecord"


def make_example(*, encoded, encoding, height, width, label, class_text, filename, patient, sha1, channels=1,
                 findings=()):
    """Serialized tf.train.Example for one image (`findings`: a multi-label set's label vector)."""

    def _bytes(value):
        value = value.encode() if isinstance(value, str) else value
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    feature = {
        ENCODED: _bytes(encoded),
        FORMAT: _bytes(encoding),
        HEIGHT: _int(height),
        WIDTH: _int(width),
        CHANNELS: _int(channels),
        LABEL: _int(label),
        CLASS_TEXT: _bytes(class_text),
        FILENAME: _bytes(filename),
        PATIENT: _bytes(patient),
        SOURCE_SHA1: _bytes(sha1),
    }
    if findings:
        feature[FINDINGS] = tf.train.Feature(float_list=tf.train.FloatList(value=list(findings)))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_batch(serialized, keys=None, num_findings=0, varying_findings=False):
    """A batch of serialized Examples -> dict of tensors, one vectorized parse for the batch.

    `num_findings` > 0 (a multi-label set) parses FINDINGS as float [B, num_findings] too;
    `varying_findings` (records of several sets) as a sparse [B, at most the longest].
    """
    spec = dict(FEATURES if keys is None else {k: FEATURES[k] for k in keys})
    if num_findings:
        spec[FINDINGS] = tf.io.FixedLenFeature([num_findings], tf.float32)
    if varying_findings:
        spec[FINDINGS] = tf.io.VarLenFeature(tf.float32)
    return tf.io.parse_example(serialized, spec)


def decode_images(encoded, encoding, height, width):
    """A batch of encoded images -> uint8 [B, height, width, 1].

    Raw pixels decode as one vectorized op for the whole batch.  JPEG and PNG decode per image:
    a batch of static size (training) as that many independent ops, which the executor runs in
    parallel (measured: 1.3-1.5x the images/s of `tf.map_fn` on 128 px JPEGs, 2 cores); a batch
    of unknown size (evaluation's last batch) with `tf.map_fn`.  Every image of a record set has
    the manifest's size.  JPEG uses the accurate integer DCT, which matches Pillow (and so
    `cxr_fast.predict`) to the bit; TensorFlow's default fast DCT is off by about 3 gray levels
    per pixel.
    """
    if encoding == "raw":
        pixels = tf.io.decode_raw(encoded, tf.uint8, fixed_length=height * width)
        return tf.reshape(pixels, [-1, height, width, 1])
    decoders = {
        "jpeg": lambda data: tf.io.decode_jpeg(data, channels=1, dct_method="INTEGER_ACCURATE"),
        "png": lambda data: tf.io.decode_png(data, channels=1),
    }
    if encoding not in decoders:
        raise InputError(f"unknown image encoding {encoding!r} in the manifest; expected jpeg, png or raw")

    def decode(data):
        return tf.ensure_shape(decoders[encoding](data), [height, width, 1])

    if encoded.shape[0] is not None:
        return tf.stack([decode(data) for data in tf.unstack(encoded)])
    return tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec([height, width, 1], tf.uint8))
