"""Augmentation semantics: identity at zero ranges, flips, a known rotation, agreement with the
reference's own affine formula, dtype and range, and the same result eagerly, in tf.data and in
a tf.function."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from cxr_fast.config import AugmentConfig
from cxr_fast.training import augment

OFF = dict(rotation_deg=0.0, width_shift=0.0, height_shift=0.0, shear_deg=0.0, zoom=0.0, horizontal_flip=False)


def _images(batch=8, size=32, seed=0):
    """Smooth random images (bilinear resampling of a smooth image is nearly exact)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (batch, 8, 8, 1)).astype(np.float32)
    return tf.cast(tf.round(tf.image.resize(coarse, [size, size], method="bicubic")), tf.uint8)


def _params(batch, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, flip=False):
    full = lambda v: tf.fill([batch], tf.constant(v, tf.float32))  # noqa: E731
    return {"theta": full(math.radians(theta)), "tx": full(tx), "ty": full(ty), "shear": full(math.radians(shear)),
            "zx": full(zx), "zy": full(zy), "flip": tf.fill([batch], flip)}


@pytest.mark.parametrize("impl", ["fused", "chain"])
def test_zero_ranges_give_the_input_back(impl):
    images = _images()
    layer = augment.Augmentation(AugmentConfig(impl=impl, **OFF), seed=1)
    out = layer(images, training=True)
    np.testing.assert_allclose(out.numpy(), images.numpy().astype(np.float32), atol=1e-3)


@pytest.mark.parametrize("impl", ["fused", "chain"])
def test_flip_only_flips(impl):
    images = _images(batch=32)
    layer = augment.Augmentation(AugmentConfig(impl=impl, **{**OFF, "horizontal_flip": True}), seed=3)
    out = layer(images, training=True).numpy()
    source = images.numpy().astype(np.float32)
    flipped = [np.allclose(o, s[:, ::-1], atol=1e-3) for o, s in zip(out, source)]
    same = [np.allclose(o, s, atol=1e-3) for o, s in zip(out, source)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 4 <= sum(flipped) <= 28  # p = 0.5


def test_known_rotation_moves_a_known_pixel():
    image = np.zeros((1, 33, 33, 1), np.float32)
    image[0, 16 - 8, 16, 0] = 255.0  # 8 rows above the centre pixel (16, 16)
    out = augment.apply_affine(tf.constant(image), _params(1, theta=90.0)).numpy()[0, ..., 0]
    # Output p samples input o + R(p - o); Keras' centre o is (h/2 + 0.5) = (17, 17), not the
    # pixel centre (16, 16).  So input (8, 16) lands at p = o + R^T((8, 16) - o) = (16, 26):
    # a positive angle turns a pixel above the centre to its right (clockwise on screen).
    row, col = np.unravel_index(np.argmax(out), out.shape)
    assert (row, col) == (16, 26)
    assert out.max() == pytest.approx(255.0)


def _keras_reference(image, theta, tx, ty, shear, zx, zy, flip):
    """ImageDataGenerator.apply_affine_transform, transcribed (rows, cols), scipy resampling."""
    t, s = math.radians(theta), math.radians(shear)
    rotation = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shear_m = np.array([[1, -math.sin(s), 0], [0, math.cos(s), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    m = rotation @ shift @ shear_m @ zoom
    h, w = image.shape
    ox, oy = h / 2 + 0.5, w / 2 + 0.5
    m = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]]) @ m @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
    out = ndimage.affine_transform(image, m[:2, :2], m[:2, 2], order=1, mode="nearest")
    return out[:, ::-1] if flip else out


@pytest.mark.parametrize("theta,tx,ty,shear,zx,zy,flip", [
    (30.0, 0.0, 0.0, 0.0, 1.0, 1.0, False),
    (-12.0, 3.0, -5.0, 0.2, 0.85, 1.15, True),
    (0.0, 0.0, 0.0, 10.0, 1.2, 0.8, False),
])
def test_fused_matches_the_reference_formula(theta, tx, ty, shear, zx, zy, flip):
    images = _images(batch=1, size=48).numpy().astype(np.float64)
    expected = _keras_reference(images[0, ..., 0], theta, tx, ty, shear, zx, zy, flip)
    out = augment.apply_affine(tf.constant(images, tf.float32), _params(1, theta, tx, ty, shear, zx, zy, flip))
    interior = (slice(6, -6), slice(6, -6))  # edges differ only in how 'nearest' meets bilinear
    np.testing.assert_allclose(out.numpy()[0, ..., 0][interior], expected[interior], atol=1.5)


@pytest.mark.parametrize("impl", ["fused", "chain"])
def test_output_dtype_range_and_change(impl):
    images = _images(batch=16)
    out = augment.Augmentation(AugmentConfig(impl=impl), seed=5)(images, training=True)
    assert out.dtype == tf.float32 and out.shape == images.shape
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    assert float(tf.reduce_mean(tf.abs(out - tf.cast(images, tf.float32)))) > 1.0  # it did something


def test_no_augmentation_at_evaluation():
    images = _images()
    layer = augment.Augmentation(AugmentConfig(), seed=1)
    for training in (False, None):
        out = layer(images, training=training)
        assert out.dtype == tf.float32
        np.testing.assert_array_equal(out.numpy(), images.numpy().astype(np.float32))
    assert augment.Augmentation(AugmentConfig(kind="none"))(images, training=True).numpy().tolist() == \
        images.numpy().astype(np.float32).tolist()


def test_apply_affine_same_eagerly_in_tf_data_and_tf_function():
    images = tf.cast(_images(batch=4), tf.float32)
    params = _params(4, theta=17.0, tx=2.0, ty=-3.0, shear=0.2, zx=0.9, zy=1.1, flip=True)
    eager = augment.apply_affine(images, params).numpy()
    graph = tf.function(augment.apply_affine)(images, params).numpy()
    data = next(iter(tf.data.Dataset.from_tensors(images).map(lambda x: augment.apply_affine(x, params)))).numpy()
    np.testing.assert_allclose(graph, eager, atol=1e-4)
    np.testing.assert_allclose(data, eager, atol=1e-4)


@pytest.mark.parametrize("impl", ["fused", "chain"])
def test_seeded_layer_same_eagerly_in_tf_data_and_tf_function(impl):
    images = _images(batch=4)
    config = AugmentConfig(impl=impl)
    eager = augment.Augmentation(config, seed=7)(images, training=True).numpy()
    layer = augment.Augmentation(config, seed=7)
    graph = tf.function(lambda x: layer(x, training=True))(images).numpy()
    data_layer = augment.Augmentation(config, seed=7)
    ds = tf.data.Dataset.from_tensors(images).map(lambda x: data_layer(x, training=True))
    data = next(iter(ds)).numpy()
    np.testing.assert_allclose(graph, eager, atol=1e-3)
    np.testing.assert_allclose(data, eager, atol=1e-3)


def test_fused_draws_cover_the_reference_ranges():
    layer = augment.FusedReferenceAffine(seed=0)
    params = layer.draw(4000, 100, 50, seed=tf.constant([0, 0]))
    assert -30 <= math.degrees(float(tf.reduce_min(params["theta"]))) < -29
    assert 29 < math.degrees(float(tf.reduce_max(params["theta"]))) <= 30
    assert 19 < float(tf.reduce_max(params["tx"])) <= 20  # 0.2 * 100 rows
    assert 9 < float(tf.reduce_max(params["ty"])) <= 10  # 0.2 * 50 cols
    assert float(tf.reduce_max(tf.abs(params["shear"]))) <= math.radians(0.2)
    assert abs(float(np.corrcoef(params["zx"].numpy(), params["zy"].numpy())[0, 1])) < 0.1  # independent
    assert 0.45 < float(tf.reduce_mean(tf.cast(params["flip"], tf.float32))) < 0.55


def test_fused_draws_are_a_function_of_the_seed():
    layer = augment.FusedReferenceAffine()
    images = _images(batch=8)
    first = layer(images, seed=tf.constant([42, 5])).numpy()
    np.testing.assert_array_equal(augment.FusedReferenceAffine()(images, seed=tf.constant([42, 5])).numpy(), first)
    assert not np.allclose(layer(images, seed=tf.constant([42, 6])).numpy(), first)
    assert not np.allclose(layer(images, seed=tf.constant([43, 5])).numpy(), first)


def _resample_dtypes(function, *args):
    """The dtypes of every ImageProjectiveTransformV3 in the traced graph of `function(*args)`."""
    graph = tf.function(function).get_concrete_function(*args).graph.as_graph_def()
    nodes = list(graph.node) + [node for f in graph.library.function for node in f.node_def]
    return [tf.dtypes.as_dtype(node.attr["dtype"].type) for node in nodes if node.op == "ImageProjectiveTransformV3"]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("impl", ["fused", "chain"])
def test_augmentation_resamples_in_float32_under_mixed_precision(policy, impl):
    # TensorFlow has no bfloat16 GPU kernel for this op: in bfloat16 it would run on the host.
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = augment.Augmentation(AugmentConfig(impl=impl), seed=1)
        images = _images(batch=4)
        dtypes = _resample_dtypes(lambda x: layer(x, training=True), images)
        assert dtypes and set(dtypes) == {tf.float32}
        assert layer(images, training=True).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_settings_name_the_flag():
    from cxr_fast.errors import InputError

    with pytest.raises(InputError, match="--augment_impl"):
        AugmentConfig(impl="fast").validate()
    with pytest.raises(InputError, match="--zoom_range"):
        AugmentConfig(zoom=1.5).validate()


def test_strength_scales_the_geometric_ranges_and_keeps_the_flip():
    layer = augment.FusedReferenceAffine(seed=0)
    seed = tf.constant([0, 0])
    full, half = layer.draw(2000, 100, 50, seed), layer.draw(2000, 100, 50, seed, strength=0.5)
    for name in ("theta", "tx", "ty", "shear"):
        np.testing.assert_allclose(half[name].numpy(), 0.5 * full[name].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(half["zx"].numpy() - 1, 0.5 * (full["zx"].numpy() - 1), atol=1e-6)
    assert 9 < float(tf.reduce_max(half["tx"])) <= 10  # 0.5 * 0.2 * 100 rows
    np.testing.assert_array_equal(half["flip"].numpy(), full["flip"].numpy())
    # strength 0: only the flip is left, exactly as the flip-only augmentation draws it
    images = _images(batch=16)
    flip_only = augment.FusedReferenceAffine(**{**OFF, "horizontal_flip": True})(images, seed=seed).numpy()
    np.testing.assert_allclose(layer(images, seed=seed, strength=0.0).numpy(), flip_only, atol=1e-3)
