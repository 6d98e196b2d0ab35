"""Exports a trained model as a SavedModel for TF Serving (encoded image bytes in).

    python -m cxr_fast.export --model=runs/model2 --export_dir=serving/cxr/1

The threshold is the one `evaluate --threshold=auto` saved beside the model, else 0.5.  The
served bytes come from anyone who can reach the server: images over --max_image_pixels (read
from the header, never decoded) or --max_image_bytes get an error string, not an answer.
"""
from absl import flags

from cxr_fast import atomic, entry
from cxr_fast import config as config_lib

_EXPORT = config_lib.ExportConfig  # the defaults, in one place

flags.DEFINE_string("model", None, "A model.keras file or a training output folder.")
flags.DEFINE_string("export_dir", None, "SavedModel folder to write (e.g. serving/NAME/VERSION).")
flags.DEFINE_bool("overwrite", _EXPORT.overwrite, "Replace a non-empty --export_dir (never the model's folder).")
flags.DEFINE_integer("max_image_pixels", _EXPORT.max_image_pixels, "Refuse images declaring more pixels (from the "
                     "header, never decoded); fixed in the SavedModel.")
flags.DEFINE_integer("max_image_bytes", _EXPORT.max_image_bytes, "Refuse inputs of more bytes; fixed "
                     "in the SavedModel.")
flags.mark_flags_as_required(["model", "export_dir"])
FLAGS = flags.FLAGS


def config_from_flags():
    return config_lib.ExportConfig(
        model=FLAGS.model, export_dir=FLAGS.export_dir, overwrite=FLAGS.overwrite,
        max_image_pixels=FLAGS.max_image_pixels, max_image_bytes=FLAGS.max_image_bytes).validate()


def main(argv):
    config = config_from_flags()
    atomic.check_output_dir(config.export_dir, config.overwrite, "--export_dir", inputs=config.inputs())
    from cxr_fast.serving import inference  # after validation: bad flags fail before TensorFlow loads
    from cxr_fast.serving import savedmodel

    model, threshold = inference.load(config.model)
    task = inference.task_of(config.model)
    path = savedmodel.export(model, config.export_dir, threshold, config.overwrite, config.max_image_pixels,
                             config.max_image_bytes, task, config.inputs())
    outputs = task.describe_outputs()
    shown = (", ".join(f"{t:.3f}" for t in threshold) if isinstance(threshold, list) else f"{threshold:.3f}")
    print(f"exported {config.model} (threshold {shown}) to {path}; signature serving_default: "
          f"images (encoded bytes) -> {outputs}; JPEG or PNG, at most "
          f"{config.max_image_pixels} pixels and {config.max_image_bytes} bytes per image")


def run():
    """The console script (`cxr-fast-export`) and `python -m`."""
    entry.run_main(main)


if __name__ == "__main__":
    run()
