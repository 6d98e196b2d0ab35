"""Classifies chest X-ray images: one JSON line per image, optional Grad-CAM overlays.

A model trained on a multi-label set prints one probability per finding instead of one label.

    python -m cxr_fast.predict --model=runs/model2 image1.jpeg scans/ --gradcam_dir=heatmaps

Files that cannot be read get an error line; the rest are still scored and the exit code is
1 at the end when any file failed.
"""
import json
import os
import sys

from absl import flags

from cxr_fast import entry, errors
from cxr_fast import config as config_lib

_PREDICT = config_lib.PredictConfig  # the defaults, in one place

flags.DEFINE_string("model", None, "A model.keras file or a training output folder.")
flags.DEFINE_string("gradcam_dir", _PREDICT.gradcam_dir, "Write a Grad-CAM overlay PNG per image here (a "
                    "multi-label model: one per finding found, the map of that finding).")
flags.DEFINE_integer("batch_size", _PREDICT.batch_size, "Images read, decoded and scored at a time.")
flags.DEFINE_integer("max_image_pixels", _PREDICT.max_image_pixels, "Larger images are refused.")
flags.mark_flags_as_required(["model"])
FLAGS = flags.FLAGS


def config_from_flags(paths=()):
    return config_lib.PredictConfig(model=FLAGS.model, paths=tuple(paths), gradcam_dir=FLAGS.gradcam_dir,
                                    batch_size=FLAGS.batch_size, max_image_pixels=FLAGS.max_image_pixels).validate()


def main(argv):
    config = config_from_flags(argv[1:])
    from cxr_fast.serving import inference  # after validation: bad arguments fail before TensorFlow loads

    model, threshold = inference.load(config.model)
    files = inference.expand(config.paths)
    if not files:
        raise errors.InputError(f"no image files in {', '.join(config.paths)}")
    if config.gradcam_dir:
        os.makedirs(config.gradcam_dir, exist_ok=True)
    results = inference.stream(model, threshold, files, inference.task_of(config.model), config.batch_size,
                               config.max_image_pixels, config.gradcam_dir)
    failed = 0
    for result in results:  # printed as each batch is scored: memory stays flat however many files
        print(json.dumps(result), flush=True)
        failed += "error" in result
    if failed:
        print(f"predict: {failed} of {len(files)} files could not be classified", file=sys.stderr)
        sys.exit(1)


def run():
    """The console script (`cxr-fast-predict`) and `python -m`."""
    entry.run_main(main, arguments=True)


if __name__ == "__main__":
    run()
