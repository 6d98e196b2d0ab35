"""What precise BatchNorm statistics must give for the tiny backbone's first BatchNorm layer:
the mean and (biased) variance of its input over every image of every batch, computed directly.
Its input (conv0 of the rescaled RGB image) does not depend on any BatchNorm, so the value does
not depend on how images were grouped into batches, replicas or workers."""
import keras
import numpy as np


def first_bn_population(steps, images):
    """[N, H, W, 1] uint8 images -> (mean, variance) per channel of tiny_bn0's input."""
    backbone = steps.backbone
    probe = keras.Model(backbone.inputs, backbone.get_layer("tiny_bn0").input)
    rgb = np.repeat(np.asarray(images, np.float32), 3, axis=-1)
    values = np.asarray(probe(rgb), np.float64).reshape(-1, probe.output.shape[-1])
    return values.mean(axis=0), values.var(axis=0)


def first_bn_statistics(steps):
    layer = steps.backbone.get_layer("tiny_bn0")
    return np.asarray(layer.moving_mean.value), np.asarray(layer.moving_variance.value)
