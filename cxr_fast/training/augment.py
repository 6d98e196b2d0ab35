"""The reference's training augmentation, run on a batch on the replica's device, in float32.

The reference used Keras' ImageDataGenerator with rotation_range=30, width_shift_range=0.2,
height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
fill_mode='nearest'.  Per image it draws
    theta ~ U(-30, 30) degrees, tx ~ U(-0.2, 0.2) * height (rows), ty ~ U(-0.2, 0.2) * width,
    shear ~ U(-0.2, 0.2) DEGREES (not radians: 0.2 deg is almost nothing),
    zx, zy ~ U(0.8, 1.2) INDEPENDENTLY (so the aspect ratio changes too), flip with p = 0.5,
and resamples ONCE (bilinear, nearest fill) with the matrix, in (row, col) coordinates,
    M = C @ R(theta) @ T(tx, ty) @ S(shear) @ Z(zx, zy) @ C^-1,   S = [[1, -sin s], [0, cos s]],
mapping output pixels to input pixels about the image centre C; the flip is applied last.

Two implementations, chosen by `AugmentConfig.impl`:
- `fused` (default): `FusedReferenceAffine` composes exactly that matrix (flip included) per
  image and resamples once with ImageProjectiveTransformV3.  Cheaper and sharper.  Its draws
  are stateless: a function of the seed it is given, which the trainer derives from (run seed,
  step, replica), so replicas and workers draw independently, runs reproduce, and a resumed
  run draws what the uninterrupted one would have.  Called without a seed it takes the next
  one from its own Keras SeedGenerator.
- `chain`: five keras-cv layers, RandomRotation(30/360) -> RandomTranslation(0.2, 0.2) ->
  RandomShear(y_factor=sin(0.2 deg)) -> RandomZoom(+-0.2, +-0.2) -> RandomFlip, i.e. the same
  distributions but five resamples (and keras-cv shears about the corner, not the centre).
  keras-cv draws from its own stateful generators (one stream per replica, not keyed on the
  step), so it is kept as the comparison for benchmarks, not for reproducible runs.
Neither is XLA-compatible: the trainer calls them outside its jit-compiled function.

Both run in float32 whatever the mixed-precision policy: TensorFlow registers
ImageProjectiveTransformV3's GPU kernel for half, float and double but not bfloat16, so under
`mixed_bfloat16` a bfloat16 resample would run on the host.  Images come in as uint8 (or
float) 0-255 and leave as float32 0-255; the trainer casts to the compute dtype at the model's
input.  With `training=False` the input is only cast, never transformed.
"""
import math

import keras
import keras_cv
import tensorflow as tf

PARAMS = ("theta", "tx", "ty", "shear", "zx", "zy", "flip")


def affine_transforms(params, height, width):
    """ImageDataGenerator's output->input matrices for a batch -> ImageProjectiveTransformV3 rows [B, 8].

    `params` holds [B] tensors: theta and shear in radians, tx in rows, ty in columns, zx, zy,
    and flip (bool).  Built in (row, col) coordinates as Keras did, then reordered to the
    (x=col, y=row) layout of the transform op.
    """
    theta, shear = params["theta"], params["shear"]
    zeros, ones = tf.zeros_like(theta), tf.ones_like(theta)

    def mat(rows):
        return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)  # [B, 3, 3]

    rotation = mat([[tf.cos(theta), -tf.sin(theta), zeros], [tf.sin(theta), tf.cos(theta), zeros],
                    [zeros, zeros, ones]])
    shift = mat([[ones, zeros, params["tx"]], [zeros, ones, params["ty"]], [zeros, zeros, ones]])
    shear_m = mat([[ones, -tf.sin(shear), zeros], [zeros, tf.cos(shear), zeros], [zeros, zeros, ones]])
    zoom = mat([[params["zx"], zeros, zeros], [zeros, params["zy"], zeros], [zeros, zeros, ones]])
    o_row, o_col = height / 2 + 0.5, width / 2 + 0.5  # Keras' transform_matrix_offset_center
    center = mat([[ones, zeros, ones * o_row], [zeros, ones, ones * o_col], [zeros, zeros, ones]])
    uncenter = mat([[ones, zeros, -ones * o_row], [zeros, ones, -ones * o_col], [zeros, zeros, ones]])
    flip_col = tf.where(params["flip"], -ones, ones)
    flip = mat([[ones, zeros, zeros], [zeros, flip_col, tf.where(params["flip"], ones * (width - 1), zeros)],
                [zeros, zeros, ones]])
    m = center @ rotation @ shift @ shear_m @ zoom @ uncenter @ flip
    # (row', col') = m @ (row, col, 1)  ->  x' = m11 x + m10 y + m12, y' = m01 x + m00 y + m02
    return tf.stack([m[:, 1, 1], m[:, 1, 0], m[:, 1, 2], m[:, 0, 1], m[:, 0, 0], m[:, 0, 2], zeros, zeros], axis=-1)


def apply_affine(images, params, fill_mode="nearest"):
    """Resamples a batch once, in float32, with the reference matrices of `params` (bilinear)."""
    images = tf.cast(images, tf.float32)
    height, width = images.shape[1], images.shape[2]
    transforms = affine_transforms(params, tf.cast(height, tf.float32), tf.cast(width, tf.float32))
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=tf.constant(0.0),
        fill_mode=fill_mode.upper(), interpolation="BILINEAR")


class FusedReferenceAffine(keras.layers.Layer):
    """The reference's rotation, shifts, shear, zoom and flip as one float32 resample per image."""

    def __init__(self, rotation_deg=30.0, width_shift=0.2, height_shift=0.2, shear_deg=0.2, zoom=0.2,
                 horizontal_flip=True, fill_mode="nearest", seed=None, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.rotation_deg, self.width_shift, self.height_shift = rotation_deg, width_shift, height_shift
        self.shear_deg, self.zoom, self.horizontal_flip = shear_deg, zoom, horizontal_flip
        self.fill_mode, self.seed = fill_mode, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def draw(self, batch_size, height, width, seed, strength=1.0):
        """The batch's parameters, a pure function of `seed` ([2] integers), the shape and `strength`.

        `strength` in [0, 1] scales every geometric range (rotation, shifts, shear, zoom's
        distance from 1) and leaves the flip alone: the trainer's ramp for runs from scratch.
        """
        u = tf.random.stateless_uniform([len(PARAMS), batch_size], seed=tf.cast(seed, tf.int64), minval=-1.0,
                                        maxval=1.0)
        height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        g = u[:6] * tf.cast(strength, tf.float32)
        return {
            "theta": g[0] * self.rotation_deg * (math.pi / 180),
            "tx": g[1] * self.height_shift * height,
            "ty": g[2] * self.width_shift * width,
            "shear": g[3] * self.shear_deg * (math.pi / 180),
            "zx": 1.0 + g[4] * self.zoom,
            "zy": 1.0 + g[5] * self.zoom,
            "flip": tf.logical_and(u[6] < 0.0, self.horizontal_flip),
        }

    def call(self, images, seed=None, strength=1.0):
        if seed is None:
            seed = self.seed_generator.next()
        shape = tf.shape(images)
        return apply_affine(images, self.draw(shape[0], shape[1], shape[2], seed, strength), self.fill_mode)

    def get_config(self):
        return {**super().get_config(), "rotation_deg": self.rotation_deg, "width_shift": self.width_shift,
                "height_shift": self.height_shift, "shear_deg": self.shear_deg, "zoom": self.zoom,
                "horizontal_flip": self.horizontal_flip, "fill_mode": self.fill_mode, "seed": self.seed}


def keras_cv_chain(config, seed=None):
    """The same augmentation as five keras-cv layers (five resamples), in float32."""
    common = {"seed": seed, "dtype": "float32"}
    fill = {"fill_mode": config.fill_mode, **common}
    zoom = (-config.zoom, config.zoom)
    layers = [
        keras_cv.layers.RandomRotation(config.rotation_deg / 360, **fill),
        keras_cv.layers.RandomTranslation(config.height_shift, config.width_shift, **fill),
        keras_cv.layers.RandomShear(y_factor=math.sin(math.radians(config.shear_deg)), **fill)
        if config.shear_deg else None,
        keras_cv.layers.RandomZoom(zoom, zoom, **fill),
        keras_cv.layers.RandomFlip("horizontal", **common) if config.horizontal_flip else None,
    ]
    return keras.Sequential([layer for layer in layers if layer is not None], name="keras_cv_chain")


class Augmentation(keras.layers.Layer):
    """What the trainer calls: the configured augmentation when training, a float32 cast otherwise.

    `seed` ([2] integers) keys the fused layer's draws; the trainer passes one per (step, replica),
    and `strength` (the fused layer only) scales its geometric ranges during a ramp.
    """

    def __init__(self, config, seed=None, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.config = config
        self.transform = None
        if config.kind == "reference":
            self.transform = (keras_cv_chain(config, seed) if config.impl == "chain" else FusedReferenceAffine(
                config.rotation_deg, config.width_shift, config.height_shift, config.shear_deg, config.zoom,
                config.horizontal_flip, config.fill_mode, seed=seed))

    def build(self, input_shape):
        if self.transform is not None:
            self.transform.build(input_shape)
        self.built = True

    def call(self, images, training=None, seed=None, strength=1.0):
        images = tf.cast(images, tf.float32)
        if not training or self.transform is None:
            return images
        if isinstance(self.transform, FusedReferenceAffine):
            return self.transform(images, seed=seed, strength=strength)
        return self.transform(images)


NOT_STARTED = 2**62  # a gated ramp's start before the gate opens: strength stays 0


class Ramp:
    """The augmentation's strength per step: 0 until the ramp starts, then linear to 1 over `steps`
    (0 steps: always 1).  The start is a variable, so it moves without a retrace (the loop restores
    it from the run's history on resume); create the ramp inside the strategy's scope."""

    def __init__(self, steps, start=0):
        self.steps = float(steps)
        self.start_step = tf.Variable(NOT_STARTED if start is None else start, dtype=tf.int64, trainable=False,
                                      name="augment_ramp_start")

    def strength(self, step):
        """A function of the step and the start, so a resumed run that restores the start draws
        what the uninterrupted one would have."""
        if self.steps <= 0:
            return tf.constant(1.0)
        progress = tf.cast(tf.cast(step, tf.int64) - self.start_step, tf.float32) / self.steps
        return tf.clip_by_value(progress, 0.0, 1.0)

    def start(self, step):
        """The ramp begins at `step` (the same on every worker: they decide on agreed logs)."""
        self.start_step.assign(step)

    @property
    def started(self):
        return int(self.start_step.numpy()) != NOT_STARTED
