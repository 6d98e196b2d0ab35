"""A SavedModel that TF Serving can run unchanged: encoded image bytes in, probability and label out.

The serving function repeats training's preprocessing in TensorFlow ops: decode (JPEG with
the accurate integer DCT, as the record reader and Pillow do; PNG, GIF and BMP through
`decode_image`), gray, squash to the model's square size with an antialiased bilinear resize,
round to uint8.  Images stored at the model's size give exactly the Keras model's
probabilities; larger ones differ only by the resize filter (Pillow's bilinear vs
TensorFlow's), well under 0.01 in probability.  16-bit PNGs are scaled by 1/256 here,
whereas `predict` shifts them by their actual bit depth.
"""
import os

import tensorflow as tf

from cxr_fast import atomic


def decode_for_model(encoded, size):
    """One encoded image (scalar string) -> uint8 [size, size, 1]."""
    image = tf.cond(tf.io.is_jpeg(encoded),
                    lambda: tf.io.decode_jpeg(encoded, channels=1, dct_method="INTEGER_ACCURATE"),
                    lambda: tf.io.decode_image(encoded, channels=1, expand_animations=False))
    image.set_shape([None, None, 1])

    def resize():
        resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [size, size]))
    return tf.ensure_shape(tf.cond(same, lambda: image, resize), [size, size, 1])


class ServingModule(tf.Module):
    def __init__(self, model, threshold):
        super().__init__()
        self.model = model
        self.threshold = tf.constant(threshold, tf.float32)
        self.size, self.channels = model.input_shape[1], model.input_shape[3]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve(self, images):
        pixels = tf.map_fn(lambda data: decode_for_model(data, self.size), images,
                           fn_output_signature=tf.TensorSpec([self.size, self.size, 1], tf.uint8))
        if self.channels == 3:
            pixels = tf.image.grayscale_to_rgb(pixels)
        probability = tf.reshape(self.model(tf.cast(pixels, tf.float32), training=False), [-1])
        label = tf.cast(probability >= self.threshold, tf.int32)
        return {"probability": probability, "label": label,
                "class": tf.gather(tf.constant(["NORMAL", "PNEUMONIA"]), label)}


def export(model, export_dir, threshold=0.5, overwrite=False):
    """Writes the SavedModel (signature `serving_default`) to export_dir, complete or not at all."""
    module = ServingModule(model, threshold)
    with atomic.staged_dir(export_dir, overwrite, flag="--export_dir") as staging:
        tf.saved_model.save(module, staging, signatures={"serving_default": module.serve})
    return os.path.abspath(export_dir)
