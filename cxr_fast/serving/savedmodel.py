"""A SavedModel that TF Serving can run unchanged: encoded image bytes in, per image probability,
label, class and error out (a multi-label model: probabilities and labels per finding, the
findings at or above the threshold joined by "|" as NIH writes them, and error); bytes that are
not a JPEG or PNG within the limits set at export are refused from their header, never decoded
(`headers`).

The serving function repeats training's preprocessing in TensorFlow ops: decode (JPEG with
the accurate integer DCT, as the record reader and Pillow do; PNG through `decode_image`),
gray, squash to the model's square size with an antialiased bilinear resize, round to uint8.
Images stored at the model's size give exactly the Keras model's probabilities; larger ones
differ only by the resize filter (Pillow's bilinear vs TensorFlow's), well under 0.01 in
probability.  16-bit PNGs are scaled by 1/256 here,
whereas `predict` shifts them by their actual bit depth.
"""
import os

import tensorflow as tf

from cxr_fast import atomic
from cxr_fast.config import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from cxr_fast.data.index import CLASS_NAMES
from cxr_fast.serving import headers
from cxr_fast.tasks import task as task_lib


def decode_for_model(encoded, size):
    """One encoded image (scalar string) -> uint8 [size, size, 1]."""
    image = tf.cond(tf.io.is_jpeg(encoded), lambda: _decode_jpeg(encoded),
                    lambda: tf.io.decode_image(encoded, channels=1, expand_animations=False))
    image.set_shape([None, None, 1])

    def resize():
        resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [size, size]))
    return tf.ensure_shape(tf.cond(same, lambda: image, resize), [size, size, 1])


def _decode_jpeg(encoded):
    """A JPEG -> uint8 [H, W, 1]; a CMYK one (4 components, which libjpeg cannot give as gray)
    through RGB, as Pillow converts it (within a gray level)."""
    def decode(channels):
        return tf.io.decode_jpeg(encoded, channels=channels, dct_method="INTEGER_ACCURATE")

    cmyk = tf.equal(tf.image.extract_jpeg_shape(encoded)[2], 4)
    return tf.cond(cmyk, lambda: tf.image.rgb_to_grayscale(decode(3)), lambda: decode(1))


class ServingModule(tf.Module):
    """The exported signature: per image a probability, label, class and error ("" when fine);
    with `findings` named, probabilities [N, findings], labels [N, findings], findings and error.

    Each input is checked from its header first (`headers.refusal`: JPEG or PNG, within the byte
    and pixel limits fixed here) and only then decoded, inside a tf.data pipeline whose
    `ignore_errors` turns a decoder error (truncated or corrupt bytes) into that image's error
    instead of a failed request.  Refused images get probability -1, label -1, class "" (every
    finding's probability and label -1, findings "").
    """

    def __init__(self, model, threshold, max_pixels, max_bytes, task):
        super().__init__()
        self.model = model
        self.task = task  # plain Python: not saved, only traced into `serve`
        self.threshold = tf.constant(threshold, tf.float32)  # a number, or one per finding
        self.size, self.channels = model.input_shape[1], model.input_shape[3]
        # Saved with the model, so an operator can read the limits and finding order back.
        self.max_image_pixels = tf.Variable(max_pixels, dtype=tf.int64, trainable=False)
        self.max_image_bytes = tf.Variable(max_bytes, dtype=tf.int64, trainable=False)
        self.finding_names = tf.Variable(list(task.findings), dtype=tf.string, trainable=False,
                                         shape=[len(task.findings)])
        self.names = tf.constant(task.serving_names())  # what the outputs are named by: classes or findings

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve(self, images):
        count = tf.size(images)
        refused = tf.map_fn(lambda data: headers.refusal(data, self.max_image_pixels, self.max_image_bytes), images,
                            fn_output_signature=tf.string)
        passed = tf.equal(refused, "")  # the header check; decoding may still fail
        accepted = tf.cast(tf.where(passed), tf.int32)[:, 0]
        decoded = tf.data.Dataset.from_tensor_slices((accepted, tf.gather(images, accepted)))
        decoded = decoded.map(lambda index, data: (index, decode_for_model(data, self.size))).ignore_errors()
        pixels = tf.zeros([count, self.size, self.size, 1], tf.uint8)
        ok = tf.zeros([count], tf.bool)
        for index, image in decoded:
            pixels = tf.tensor_scatter_nd_update(pixels, [[index]], image[None])
            ok = tf.tensor_scatter_nd_update(ok, [[index]], [True])
        if self.channels == 3:
            pixels = tf.image.grayscale_to_rgb(pixels)
        # An empty request still runs the model on one blank image: oneDNN's BatchNorm on AVX-512
        # CPUs fails on a batch of 0 ("Incompatible shapes: [16] vs. [0,32,32,3]").
        blank = tf.zeros([tf.cast(tf.equal(count, 0), tf.int32), self.size, self.size, self.channels], tf.uint8)
        probability = self.model(tf.cast(tf.concat([pixels, blank], 0), tf.float32), training=False)[:count]
        error = tf.where(ok, "", tf.where(passed, "unreadable: the image data is truncated or corrupt", refused))
        return self.task.serving_outputs(probability, ok, error, self.threshold, self.names)


def export(model, export_dir, threshold=0.5, overwrite=False, max_pixels=DEFAULT_MAX_PIXELS,
           max_bytes=DEFAULT_MAX_BYTES, task=None, inputs=(), command=None):
    """Writes the SavedModel (signature `serving_default`) to export_dir, complete or not at all.

    `task`: the model's (`inference.task_of`; default Kermany's binary one), which names the
    outputs (`task.serving_outputs`); `inputs`: (path, what)
    pairs the export may never replace, `command`: the writer whose own earlier export is
    replaced without `overwrite` (`atomic.check_output_dir`).
    """
    task = task or task_lib.create((), CLASS_NAMES)
    task.output_thresholds(model.output_shape[-1], threshold)
    module = ServingModule(model, threshold, max_pixels, max_bytes, task)
    with atomic.staged_dir(export_dir, overwrite, "--export_dir", command, inputs) as staging:
        tf.saved_model.save(module, staging, signatures={"serving_default": module.serve})
    return os.path.abspath(export_dir)
