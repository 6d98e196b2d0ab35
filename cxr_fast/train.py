"""Trains the reference classifier: flags -> TrainConfig -> `loop.train_and_evaluate`.

    python -m cxr_fast.train --flagfile=model2.flags --data_dir=records/kermany128 --model_dir=runs/model2

The same command runs on one device, on all GPUs of a host (--strategy=auto or mirrored) and,
with TF_CONFIG set on every host, across hosts (--strategy=multi_worker).  The resolved flags
are written to `{model_dir}/flags.txt`, itself a flagfile that reproduces the run.
"""
import sys

from absl import flags

from cxr_fast import atomic, entry
from cxr_fast import config as config_lib
from cxr_fast.data import mixture

# Defaults are the config's (one place): a flag only names and explains its field.
_DATA, _MODEL, _AUGMENT, _TRAIN = (config_lib.DataConfig, config_lib.ModelConfig, config_lib.AugmentConfig,
                                   config_lib.TrainConfig)

# Data
flags.DEFINE_string("data_dir", None, "Record set written by tools.make_tfrecords; several joined by commas train "
                    "together, their findings aligned (docs/data-sets.md).")
flags.DEFINE_string("model_dir", None, "Outputs: checkpoints, history, model.keras, summary.json.")
flags.DEFINE_integer("image_size", _DATA.image_size, "Model input size; records of another stored size are resized.")
flags.DEFINE_integer("batch_size", _DATA.global_batch_size, "Global batch size (split across replicas).")
flags.DEFINE_enum("cache", _DATA.cache, ["auto", "memory", "none"], "Cache the decoded training split in memory.")
flags.DEFINE_integer("cache_budget_mb", _DATA.cache_budget_mb, "cache=auto caches when the decoded split fits this.")
flags.DEFINE_integer("shuffle_buffer", _DATA.shuffle_buffer, "Records in the shuffle buffer when records are read "
                     "from disk; a cached split is fully permuted every epoch.")
flags.DEFINE_string("data_service", _DATA.data_service, "grpc://HOST:PORT of a tf.data service dispatcher "
                    "(tools.data_service): read and decode the training split there; evaluation still reads locally.")
flags.DEFINE_list("findings", list(_DATA.findings), "Train on these findings only (aligned names or a set's own); "
                  "default: every finding the record sets label.")
flags.DEFINE_string("mix", _DATA.mix, "How several record sets are drawn: proportional (each film once per epoch), "
                    "equal, or one weight per set (e.g. 3,1).")
flags.DEFINE_bool("verify_records", _DATA.verify, "Check every shard's sha256 and record count against the manifest "
                  "before training.")
# Model
flags.DEFINE_enum("backbone", _MODEL.backbone, list(config_lib.BACKBONES), "EfficientNet variant; tiny: a small CNN "
                  "for plumbing checks (needs --weights=none), not for results.")
flags.DEFINE_string("weights", _MODEL.weights, "imagenet, none, or the path of a local Keras weights file (the "
                    "*_notop.h5 of the backbone) for machines without internet.")
flags.DEFINE_integer("freeze_layers", _MODEL.freeze_layers, "Freeze the first N backbone layers (model 1: 10).")
flags.DEFINE_float("freeze_fraction", _MODEL.freeze_fraction, "Freeze this fraction of the backbone layers (model 2: "
                   "0.7).")
flags.DEFINE_float("bn_momentum", _MODEL.bn_momentum, "Expert: BatchNorm moving-average momentum of the backbone; 0 "
                   "keeps Keras' 0.99.  Matters only with --precise_bn_batches=0.")
flags.DEFINE_integer("precise_bn_batches", _TRAIN.precise_bn_batches, "Before each validation, recompute the "
                     "BatchNorm statistics as population statistics of this many training batches (at most a quarter "
                     "of an epoch's steps) under the current weights (PreciseBN); 0: keep Keras' moving averages, "
                     "which lag weights trained from scratch.")
flags.DEFINE_list("head_dropout", [str(rate) for rate in _MODEL.head_dropout], "The head's two dropout rates (the "
                  "reference's 0.3,0.2).")
# Augmentation (the reference's ImageDataGenerator settings, in its units)
flags.DEFINE_enum("augment", _AUGMENT.kind, ["reference", "none"], "Training augmentation.")
flags.DEFINE_enum("augment_impl", _AUGMENT.impl, ["fused", "chain"],
                  "fused: one affine resample per image; chain: five keras-cv layers.")
flags.DEFINE_float("rotation_range", _AUGMENT.rotation_deg, "Rotation, +- degrees.")
flags.DEFINE_float("width_shift_range", _AUGMENT.width_shift, "Horizontal shift, +- fraction of the width.")
flags.DEFINE_float("height_shift_range", _AUGMENT.height_shift, "Vertical shift, +- fraction of the height.")
flags.DEFINE_float("shear_range", _AUGMENT.shear_deg, "Shear, +- DEGREES (ImageDataGenerator's unit).")
flags.DEFINE_float("zoom_range", _AUGMENT.zoom, "Zoom in [1 - z, 1 + z], drawn for x and y independently.")
flags.DEFINE_bool("horizontal_flip", _AUGMENT.horizontal_flip, "Flip half of the images horizontally.")
flags.DEFINE_float("augment_ramp_epochs", _TRAIN.augment_ramp_epochs, "The geometric ranges rise linearly from 0 to "
                   "the above over these first epochs; -1 (auto): a quarter of --epochs with --weights=none (from "
                   "scratch), else 0 (the reference).")
flags.DEFINE_float("augment_ramp_start_auc", _TRAIN.augment_ramp_start_auc, "The ramp starts after the first epoch "
                   "whose validation AUC reaches this (flips only until then: a net from scratch finds a faint sign "
                   "first); 0: at the first step.")
flags.DEFINE_enum("fill_mode", _AUGMENT.fill_mode, ["nearest", "reflect", "wrap", "constant"], "Fill outside the "
                  "image.")
# Optimization
flags.DEFINE_integer("epochs", _TRAIN.epochs, "Epochs (passes over the training split).")
flags.DEFINE_float("learning_rate", _TRAIN.learning_rate, "Adam learning rate (model 1: 1e-3, model 2: 1e-4).")
flags.DEFINE_enum("class_weight", _TRAIN.class_weight, ["balanced", "none"], "Loss weights per class.")
flags.DEFINE_float("reduce_lr_factor", _TRAIN.reduce_lr_factor, "ReduceLROnPlateau factor.")
flags.DEFINE_integer("reduce_lr_patience", _TRAIN.reduce_lr_patience, "ReduceLROnPlateau patience (epochs).")
flags.DEFINE_float("min_learning_rate", _TRAIN.min_learning_rate, "ReduceLROnPlateau floor.")
flags.DEFINE_integer("early_stopping_patience", _TRAIN.early_stopping_patience, "EarlyStopping patience (epochs).")
flags.DEFINE_integer("seed", _TRAIN.seed, "Seed of weights, augmentation and sample order.")
# Distribution and speed
flags.DEFINE_enum("strategy", _TRAIN.strategy, ["auto", "one_device", "mirrored", "multi_worker"],
                  "auto: all GPUs of this host when there are several, else one device.")
flags.DEFINE_enum("precision", _TRAIN.precision, ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                  "auto: float32 on CPU, bfloat16 on Ampere+ GPUs, float16 on Volta/Turing.")
flags.DEFINE_enum("jit_compile", _TRAIN.jit_compile, ["auto", "on", "off"], "XLA for forward/backward; auto: on for "
                  "GPUs.")
flags.DEFINE_integer("steps_per_epoch", _TRAIN.steps_per_epoch, "0: one pass over the training split.")
flags.DEFINE_integer("steps_per_loop", _TRAIN.steps_per_loop, "Steps per tf.function call; 0: 1 on CPU, up to 50 on "
                     "GPUs.")
flags.DEFINE_float("checkpoint_every_secs", _TRAIN.checkpoint_every_secs, "Mid-epoch checkpoint interval; 0: after "
                   "every loop.")
flags.DEFINE_bool("resume", _TRAIN.resume, "Continue the run in --model_dir if it holds one.")
flags.DEFINE_enum("sync_batchnorm", _TRAIN.sync_batchnorm, ["auto", "on", "off"], "BatchNorm moments over the global "
                  "batch (all replicas) instead of each replica's; auto: on with several replicas of fewer than "
                  f"{config_lib.SMALL_REPLICA_BATCH} images each (e.g. --batch_size=64 on 8 GPUs).")
flags.DEFINE_bool("deterministic", _TRAIN.deterministic, "TensorFlow op determinism: a rerun or an exact resume "
                  "gives the same weights bit for bit on GPUs too (CPU runs are deterministic already); slower on "
                  "GPUs.")
flags.DEFINE_float("collective_timeout_secs", _TRAIN.collective_timeout_secs, "multi_worker: fail a collective that "
                   "waits this long on a worker that is alive but stuck; 0: off (TensorFlow starts a thread per "
                   "collective when on; a dead worker is noticed through heartbeats either way).")
flags.DEFINE_string("export_dir", _TRAIN.export_dir, "Also export a SavedModel for TF Serving here (encoded images "
                    "in).")
flags.mark_flags_as_required(["data_dir", "model_dir"])
FLAGS = flags.FLAGS


def config_from_flags():
    data = config_lib.DataConfig(
        data_dir=FLAGS.data_dir, image_size=FLAGS.image_size, global_batch_size=FLAGS.batch_size, cache=FLAGS.cache,
        cache_budget_mb=FLAGS.cache_budget_mb, shuffle_buffer=FLAGS.shuffle_buffer, seed=FLAGS.seed,
        verify=FLAGS.verify_records, data_service=FLAGS.data_service, findings=tuple(FLAGS.findings), mix=FLAGS.mix)
    model = config_lib.ModelConfig(
        backbone=FLAGS.backbone, image_size=FLAGS.image_size, weights=FLAGS.weights,
        freeze_layers=FLAGS.freeze_layers, freeze_fraction=FLAGS.freeze_fraction, bn_momentum=FLAGS.bn_momentum,
        head_dropout=config_lib.parse_floats(FLAGS.head_dropout, "--head_dropout", "0.3,0.2"))
    augment = config_lib.AugmentConfig(
        kind=FLAGS.augment, impl=FLAGS.augment_impl, rotation_deg=FLAGS.rotation_range,
        width_shift=FLAGS.width_shift_range, height_shift=FLAGS.height_shift_range, shear_deg=FLAGS.shear_range,
        zoom=FLAGS.zoom_range, horizontal_flip=FLAGS.horizontal_flip, fill_mode=FLAGS.fill_mode)
    return config_lib.TrainConfig(
        model_dir=FLAGS.model_dir, data=data, model=model, augment=augment, epochs=FLAGS.epochs,
        learning_rate=FLAGS.learning_rate, class_weight=FLAGS.class_weight, strategy=FLAGS.strategy,
        precision=FLAGS.precision, jit_compile=FLAGS.jit_compile, steps_per_epoch=FLAGS.steps_per_epoch,
        steps_per_loop=FLAGS.steps_per_loop, precise_bn_batches=FLAGS.precise_bn_batches,
        augment_ramp_epochs=FLAGS.augment_ramp_epochs, augment_ramp_start_auc=FLAGS.augment_ramp_start_auc,
        checkpoint_every_secs=FLAGS.checkpoint_every_secs,
        reduce_lr_factor=FLAGS.reduce_lr_factor, reduce_lr_patience=FLAGS.reduce_lr_patience,
        min_learning_rate=FLAGS.min_learning_rate, early_stopping_patience=FLAGS.early_stopping_patience,
        seed=FLAGS.seed, resume=FLAGS.resume, collective_timeout_secs=FLAGS.collective_timeout_secs,
        sync_batchnorm=FLAGS.sync_batchnorm, deterministic=FLAGS.deterministic,
        export_dir=FLAGS.export_dir,
    ).validate()


def resolved_flags():
    """This entry point's flags with their values, as a flagfile."""
    return "\n".join(f.serialize() for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])) + "\n"


def main(argv):
    config = config_from_flags()
    mixture.open_records(config.data.data_dir, selected=config.data.findings,
                         mix=config.data.mix).check_batch_size(config.data.global_batch_size)
    if config.export_dir:  # an earlier export of this command is replaced; anything else is refused
        atomic.check_output_dir(config.export_dir, False, "--export_dir", "train", config.inputs())
    # after validation: bad flags and a bad --data_dir fail before TensorFlow loads
    from cxr_fast.distributed import strategy as strategy_lib
    from cxr_fast.data import pipeline
    from cxr_fast.training import loop

    with pipeline.readable_errors(config.data.data_dir), \
            strategy_lib.cluster_errors(config.strategy == "multi_worker", config.collective_timeout_secs):
        loop.train_and_evaluate(config, flags_text=resolved_flags())


def run():
    """The console script (`cxr-fast-train`) and `python -m`."""
    entry.run_main(main)


if __name__ == "__main__":
    run()
