"""Exports a trained model as a SavedModel for TF Serving (encoded image bytes in).

    python -m cxr_fast.export --model=runs/model2 --export_dir=serving/cxr/1

The threshold is the one `evaluate --threshold=auto` saved beside the model, else 0.5.
"""
from absl import flags

from cxr_fast import errors

flags.DEFINE_string("model", None, "A model.keras file or a training output folder.")
flags.DEFINE_string("export_dir", None, "SavedModel folder to write (e.g. serving/NAME/VERSION).")
flags.DEFINE_bool("overwrite", False, "Replace a non-empty --export_dir.")
flags.mark_flags_as_required(["model", "export_dir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise errors.InputError(f"unexpected arguments {argv[1:]}; all settings are flags")
    from cxr_fast.serving import inference  # after flag parsing: TensorFlow takes seconds to load
    from cxr_fast.serving import savedmodel

    model, threshold = inference.load(FLAGS.model)
    path = savedmodel.export(model, FLAGS.export_dir, threshold, FLAGS.overwrite)
    print(f"exported {FLAGS.model} (threshold {threshold:.3f}) to {path}; signature serving_default: "
          "images (encoded bytes) -> probability, label, class")


if __name__ == "__main__":
    errors.run_main(main)
