"""The classifier: reference head, parameter counts, freezing, input handling, weights loading."""
import keras
import numpy as np
import pytest

from cxr_fast.config import ModelConfig
from cxr_fast.errors import InputError
from cxr_fast.training import model as model_lib


@pytest.mark.parametrize("freeze,expected", [
    (dict(freeze_layers=10), "model1"),
    (dict(freeze_fraction=0.7), "model2"),
])
def test_b2_counts_match_the_reference(freeze, expected):
    config = ModelConfig(backbone="B2", image_size=128, weights="none", **freeze)
    model, backbone = model_lib.build_model(config)
    report = model_lib.parameter_report(model, backbone, config)
    reference = model_lib.REFERENCE_PARAMS
    assert (report["total"], report["base"], report["head"]) == (reference["total"], reference["base"], reference["head"])
    assert (report["trainable"], report["non_trainable"]) == (reference[expected]["trainable"],
                                                             reference[expected]["non_trainable"])
    assert any("matches the reference's" in line for line in model_lib.describe(report))


def test_head_layout_and_frozen_batchnorm_in_inference():
    config = ModelConfig(backbone="B0", image_size=32, weights="none", freeze_fraction=0.5)
    model, backbone = model_lib.build_model(config)
    assert [layer.name for layer in model.layers[-6:]] == ["avg_pool", "dense_128", "dropout_03", "dense_64",
                                                          "dropout_02", "pneumonia"]
    assert model.get_layer("dropout_03").rate == 0.3 and model.get_layer("dropout_02").rate == 0.2
    frozen = model_lib.freeze_count(config, len(backbone.layers))
    assert frozen == int(0.5 * len(backbone.layers))
    assert not any(layer.trainable for layer in backbone.layers[:frozen])
    assert all(layer.trainable for layer in backbone.layers[frozen:])
    batchnorm = next(layer for layer in backbone.layers[:frozen] if "bn" in layer.name)
    before = [w.numpy().copy() for w in batchnorm.weights]
    model(np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1)).astype(np.uint8), training=True)
    for old, new in zip(before, batchnorm.weights):  # moving statistics untouched in training mode
        np.testing.assert_array_equal(old, new.numpy())


def test_takes_uint8_gray_and_float_output():
    model, _ = model_lib.build_model(ModelConfig(backbone="B0", image_size=32, weights="none"))
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 1)).astype(np.uint8)
    out = model(images, training=False)
    assert tuple(out.shape) == (3, 1) and out.dtype.name == "float32"
    np.testing.assert_allclose(out.numpy(), model(images.astype(np.float32), training=False).numpy(), atol=1e-6)


def test_local_weights_file_loads_and_misfit_is_clear(tmp_path):
    source, source_backbone = model_lib.build_model(ModelConfig(backbone="B0", image_size=32, weights="none"))
    path = str(tmp_path / "b0_notop.weights.h5")
    source_backbone.save_weights(path)
    _, loaded = model_lib.build_model(ModelConfig(backbone="B0", image_size=32, weights=path))
    for a, b in zip(source_backbone.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(InputError, match="does not fit the backbone"):
        model_lib.build_model(ModelConfig(backbone="B1", image_size=32, weights=path))


def test_bad_model_settings_name_the_flag(tmp_path):
    with pytest.raises(InputError, match="--weights=.*no such file"):
        ModelConfig(weights=str(tmp_path / "missing.h5")).validate()
    with pytest.raises(InputError, match="--backbone=B9"):
        ModelConfig(backbone="B9").validate()
    with pytest.raises(InputError, match="not both"):
        ModelConfig(freeze_layers=3, freeze_fraction=0.5).validate()
    for rates in ((0.3,), (0.3, 1.0), (-0.1, 0.2)):
        with pytest.raises(InputError, match="--head_dropout=.*two rates in"):
            ModelConfig(head_dropout=rates).validate()


def test_bn_momentum_option():
    model, backbone = model_lib.build_model(ModelConfig(backbone="B0", image_size=32, weights="none",
                                                        bn_momentum=0.9))
    import keras

    batchnorms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batchnorms and all(layer.momentum == 0.9 for layer in batchnorms)
    _, default = model_lib.build_model(ModelConfig(backbone="B0", image_size=32, weights="none"))
    assert all(layer.momentum == 0.99 for layer in default.layers
               if isinstance(layer, keras.layers.BatchNormalization))


def test_head_dropout_option_sets_both_rates():
    model, _ = model_lib.build_model(ModelConfig(backbone="B0", image_size=32, weights="none", head_dropout=(0.1, 0.0)))
    assert model.get_layer("dropout_03").rate == 0.1 and model.get_layer("dropout_02").rate == 0.0


def test_tiny_backbone_for_plumbing_checks():
    config = ModelConfig(backbone="tiny", image_size=32, weights="none")
    model, backbone = model_lib.build_model(config.validate())
    assert backbone.name == "tiny" and isinstance(model.layers[2], keras.Model)  # nested, as Grad-CAM expects
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in backbone.layers) == 3
    assert model.predict(np.full((2, 32, 32, 1), 255, np.uint8), verbose=0).shape == (2, 1)
    assert model_lib.parameter_report(model, backbone, config)["backbone"] == "tiny CNN"
    with pytest.raises(InputError, match="--backbone=tiny has no ImageNet weights"):
        ModelConfig(backbone="tiny").validate()
