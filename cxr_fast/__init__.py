"""cxr_fast: a high-throughput TensorFlow training pipeline for chest X-ray classifiers.

The stages, lowest first; a module imports only from its own stage and the ones listed before
it (tests/test_layering.py checks this, and that there are no import cycles):
    config, errors, atomic, workers   small shared modules at the top of the package
    data/          files -> records -> tf.data batches
    distributed/   where a run computes: strategy, precision, XLA; local clusters; tf.data service
    serving/       a trained model on new images: loading, classifying, Grad-CAM, SavedModel
    evaluation/    metrics, scoring a split, plots, the report
    training/      model, device-side augmentation, compiled steps, the loop, checkpoints
    train, evaluate, predict, export   entry points: parse flags, build a config, call one function
"""

__version__ = "0.1.0"
