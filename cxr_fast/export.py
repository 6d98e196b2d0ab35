"""Exports a trained model as a SavedModel for TF Serving (encoded image bytes in).

    python -m cxr_fast.export --model=runs/model2 --export_dir=serving/cxr/1

The threshold is the one `evaluate --threshold=auto` saved beside the model, else 0.5.  The
served bytes come from anyone who can reach the server: images over --max_image_pixels (read
from the header, never decoded) or --max_image_bytes get an error string, not an answer.
"""
from absl import flags

from cxr_fast import atomic, entry
from cxr_fast.config import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, LIMIT_CEILING, check_range

flags.DEFINE_string("model", None, "A model.keras file or a training output folder.")
flags.DEFINE_string("export_dir", None, "SavedModel folder to write (e.g. serving/NAME/VERSION).")
flags.DEFINE_bool("overwrite", False, "Replace a non-empty --export_dir (never the model's folder).")
flags.DEFINE_integer("max_image_pixels", DEFAULT_MAX_PIXELS, "Refuse images declaring more pixels (from the header, "
                     "never decoded); fixed in the SavedModel.")
flags.DEFINE_integer("max_image_bytes", DEFAULT_MAX_BYTES, "Refuse inputs of more bytes; fixed "
                     "in the SavedModel.")
flags.mark_flags_as_required(["model", "export_dir"])
FLAGS = flags.FLAGS


def main(argv):
    for name in ("max_image_pixels", "max_image_bytes"):
        check_range(f"--{name}", getattr(FLAGS, name), 1, LIMIT_CEILING)
    inputs = [(FLAGS.model, "the model (--model)")]
    atomic.check_output_dir(FLAGS.export_dir, FLAGS.overwrite, "--export_dir", inputs=inputs)
    from cxr_fast.serving import inference  # after validation: bad flags fail before TensorFlow loads
    from cxr_fast.serving import savedmodel

    model, threshold = inference.load(FLAGS.model)
    findings, classes = inference.findings_of(FLAGS.model), inference.classes_of(FLAGS.model)
    path = savedmodel.export(model, FLAGS.export_dir, threshold, FLAGS.overwrite, FLAGS.max_image_pixels,
                             FLAGS.max_image_bytes, findings, classes, inputs)
    outputs = (f"probabilities and labels per finding ({', '.join(findings)}), findings, error" if findings
               else f"probability, label, class ({' or '.join(classes)}), error")
    shown = (", ".join(f"{t:.3f}" for t in threshold) if isinstance(threshold, list) else f"{threshold:.3f}")
    print(f"exported {FLAGS.model} (threshold {shown}) to {path}; signature serving_default: "
          f"images (encoded bytes) -> {outputs}; JPEG or PNG, at most "
          f"{FLAGS.max_image_pixels} pixels and {FLAGS.max_image_bytes} bytes per image")


def run():
    """The console script (`cxr-fast-export`) and `python -m`."""
    entry.run_main(main)


if __name__ == "__main__":
    run()
