"""EfficientNet backbone + the reference head, freezing, weights, and the parameter report.

    input (H, W, 1 or 3), any numeric dtype, 0-255
      -> gray replicated to RGB (Concatenate, so saved models need no custom code)
      -> keras.applications.EfficientNet{B0..B7}(include_top=False): it rescales and normalizes
         0-255 inputs itself, so nothing here divides by 255 (the reference did, twice)
      -> GlobalAveragePooling2D -> Dense(128, relu) -> Dropout(0.3) -> Dense(64, relu)
      -> Dropout(0.2) -> Dense(1, sigmoid, float32 even under mixed precision)
(the two dropout rates are `head_dropout`; the layer names keep the reference's).  A multi-label
set's model ends in Dense(findings, sigmoid) named "findings" instead: one probability each.

Freezing sets `trainable = False` on the first N backbone layers; a frozen BatchNormalization
layer in Keras 3 also runs in inference mode, so its statistics stay those of the weights.
"""
import os
import warnings

import keras

from cxr_fast.errors import InputError
from cxr_fast.tasks import task as task_lib

# From docs/reference.md (Keras 2, EfficientNetB2 at 128x128x3).
REFERENCE_PARAMS = {
    "base": 7_768_569, "head": 188_673, "total": 7_957_242,
    "model1": {"freeze": "first 10 layers", "trainable": 7_888_387, "non_trainable": 68_855},
    "model2": {"freeze": "first 70% (238 of 340 layers)", "trainable": 6_383_963, "non_trainable": 1_573_279},
}

_BACKBONES = {f"B{i}": getattr(keras.applications, f"EfficientNetB{i}") for i in range(8)}


def backbone_name(backbone):
    """"EfficientNetB2" for --backbone=B2, "tiny CNN" for --backbone=tiny."""
    return "tiny CNN" if backbone == "tiny" else f"EfficientNet{backbone}"


def tiny_backbone(shape):
    """`--backbone=tiny`: three stride-2 conv-BatchNorm-ReLU blocks (16, 32, 64 channels), 0-255 in.

    For plumbing checks, smoke tests and process-level tests (resume, clusters, services): it
    builds and traces in about a second on a CPU where EfficientNetB0 takes ~35 s, and it has
    the parts whose handling matters (BatchNorm statistics, a nested backbone for Grad-CAM).
    Not a model for results.
    """
    inputs = keras.Input(shape, name="tiny_input")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="tiny_rescale")(inputs)
    for index, width in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"tiny_conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"tiny_bn{index}")(x)
        x = keras.layers.Activation("relu", name=f"tiny_relu{index}")(x)
    return keras.Model(inputs, x, name="tiny")


def build_backbone(config):
    """The EfficientNet without its top (or the tiny CNN), with ImageNet, no, or local weights."""
    shape = (config.image_size, config.image_size, 3)
    if config.backbone == "tiny":
        backbone = tiny_backbone(shape)
        if config.weights != "none":
            load_weights(backbone, config.weights)
        return backbone
    weights = "imagenet" if config.weights == "imagenet" else None
    try:
        backbone = _BACKBONES[config.backbone](include_top=False, weights=weights, input_shape=shape)
    except Exception as err:  # download failures surface as many exception types
        if weights != "imagenet":
            raise
        raise InputError(f"--weights=imagenet: could not load the ImageNet weights of EfficientNet{config.backbone} "
                         f"({type(err).__name__}); on a machine without internet download the *_notop.h5 file "
                         "elsewhere and pass its path as --weights") from None
    if config.weights not in ("imagenet", "none"):
        load_weights(backbone, config.weights)
    return backbone


def load_weights(backbone, path):
    if not os.path.isfile(path):
        raise InputError(f"--weights={path}: no such file")
    try:
        with warnings.catch_warnings(record=True) as caught:  # a misfit warns once per layer, then fails
            warnings.simplefilter("always")
            backbone.load_weights(path)
    except Exception as err:
        raise InputError(f"--weights={path} does not fit the backbone {backbone.name} at input "
                         f"{backbone.input_shape[1:]} ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def freeze_count(config, num_layers):
    """How many leading backbone layers to freeze (model 2: int(0.7 * layers), as the reference)."""
    if config.freeze_fraction:
        return int(config.freeze_fraction * num_layers)
    return min(config.freeze_layers, num_layers)


def build_model(config):
    """The classifier: returns (model, backbone)."""
    inputs = keras.Input((config.image_size, config.image_size, config.channels), name="image")
    x = keras.layers.Concatenate(name="gray_to_rgb")([inputs] * 3) if config.channels == 1 else inputs
    backbone = build_backbone(config)
    for layer in backbone.layers[:freeze_count(config, len(backbone.layers))]:
        layer.trainable = False
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if config.bn_momentum:  # moving statistics that keep up with fast-changing weights
                layer.momentum = config.bn_momentum
            # Keras' synchronized BatchNorm: moments all-reduced over the replicas in training mode
            # (read at call time; a model loaded outside a strategy computes them locally)
            layer.synchronized = config.sync_batchnorm
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dense(128, activation="relu", name="dense_128")(x)
    x = keras.layers.Dropout(config.head_dropout[0], name="dropout_03")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense_64")(x)
    x = keras.layers.Dropout(config.head_dropout[1], name="dropout_02")(x)
    task = task_lib.create(config.findings, config.classes)
    outputs = keras.layers.Dense(task.outputs, activation="sigmoid", dtype="float32", name=task.head_name)(x)
    return keras.Model(inputs, outputs, name=f"cxr_efficientnet{config.backbone.lower()}"), backbone


def all_layers(model):
    """Every layer of `model`, nested models included, depth first, in order."""
    for layer in getattr(model, "layers", ()):
        yield from all_layers(layer)
        yield layer


def _count(weights):
    return int(sum(w.numpy().size if hasattr(w, "numpy") else int(w.size) for w in weights))


def parameter_report(model, backbone, config):
    """Parameter counts, with the reference's where the settings are the reference's."""
    frozen = freeze_count(config, len(backbone.layers))
    report = {
        "backbone": backbone_name(config.backbone), "backbone_layers": len(backbone.layers), "frozen_layers": frozen,
        "total": _count(model.weights), "trainable": _count(model.trainable_weights),
        "non_trainable": _count(model.non_trainable_weights), "base": _count(backbone.weights),
    }
    report["head"] = report["total"] - report["base"]
    if config.backbone == "B2" and config.image_size == 128:
        report["reference"] = REFERENCE_PARAMS
    return report


def describe(report):
    """The log lines of a parameter report, beside the reference's counts."""
    lines = [f"{report['backbone']}: {report['backbone_layers']} layers, first {report['frozen_layers']} frozen; "
             f"parameters total {report['total']:,} (base {report['base']:,} + head {report['head']:,}), "
             f"trainable {report['trainable']:,}, non-trainable {report['non_trainable']:,}"]
    reference = report.get("reference")
    if reference:
        same = [name for name in ("model1", "model2") if (reference[name]["trainable"], reference[name]["non_trainable"])
                == (report["trainable"], report["non_trainable"])]
        lines.append(f"reference (Keras 2): total {reference['total']:,} (base {reference['base']:,} + head "
                     f"{reference['head']:,}); model 1 ({reference['model1']['freeze']}) trainable "
                     f"{reference['model1']['trainable']:,} / {reference['model1']['non_trainable']:,}; model 2 "
                     f"({reference['model2']['freeze']}) trainable {reference['model2']['trainable']:,} / "
                     f"{reference['model2']['non_trainable']:,}")
        lines.append(f"matches the reference's {' and '.join(same)} counts exactly" if same else
                     "differs from both reference freezes (other freeze settings)")
        lines.append("Keras 3 lists 339 backbone layers where Keras 2 listed 340 (the missing one holds no "
                     "parameters), so --freeze_fraction=0.7 freezes 237 layers and the same weights as the reference")
    return lines
