"""Grad-CAM (Selvaraju et al. 2017) heat maps over the backbone's last convolutional block.

The classifier is input -> gray-to-RGB -> EfficientNet (ending in `top_activation`, its last
conv block) -> head.  The map is the ReLU of the block's channels weighted by the spatially
averaged gradient of one output's probability (PNEUMONIA; a multi-label model: the finding
asked for), normalized to [0, 1] per image and resized to the image.
"""
import io

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from PIL import Image

from cxr_fast import atomic


def _split(model):
    """(backbone, layers after it) of a cxr_fast classifier."""
    index = next(i for i, layer in enumerate(model.layers) if isinstance(layer, keras.Model))
    return model.layers[index], model.layers[index + 1:]


def heatmaps(model, images, output_index=0):
    """Images [B, H, W, C] 0-255 -> Grad-CAM maps [B, H, W] in [0, 1] of output `output_index`."""
    backbone, head = _split(model)
    images = tf.cast(images, tf.float32)
    rgb = tf.concat([images] * 3, axis=-1) if images.shape[-1] == 1 else images
    features = backbone(rgb, training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)
        output = features
        for layer in head:
            output = layer(output, training=False)
        score = tf.reduce_sum(output[:, output_index])
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
    cams = tf.image.resize(cams, images.shape[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
    return (cams / tf.maximum(peak, 1e-12)).numpy()


def overlay(gray, cam, path, alpha=0.45):
    """Writes the gray image with the heat map (jet colours) blended on top, as PNG."""
    height, width = gray.shape
    cam = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR))
    colours = matplotlib.colormaps["jet"](cam / 255.0)[..., :3] * 255
    blended = (1 - alpha) * np.repeat(gray[..., None], 3, axis=-1) + alpha * colours
    buffer = io.BytesIO()
    Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    atomic.write_bytes(path, buffer.getvalue())
    return path
