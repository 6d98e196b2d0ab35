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
from cxr_fast.config import LIMIT_CEILING, check_range
from cxr_fast.data import imaging

flags.DEFINE_string("model", None, "A model.keras file or a training output folder.")
flags.DEFINE_string("gradcam_dir", None, "Write a Grad-CAM overlay PNG per image here (a multi-label model: one "
                    "per finding found, the map of that finding).")
flags.DEFINE_integer("batch_size", 32, "Images per prediction batch.")
flags.DEFINE_integer("max_image_pixels", imaging.DEFAULT_MAX_PIXELS, "Larger images are refused.")
flags.mark_flags_as_required(["model"])
FLAGS = flags.FLAGS


def main(argv):
    paths = argv[1:]
    check_range("--batch_size", FLAGS.batch_size, 1, 4096)
    check_range("--max_image_pixels", FLAGS.max_image_pixels, 1, LIMIT_CEILING)
    if not paths:
        raise errors.InputError("name at least one image file or folder after the flags")
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise errors.InputError(f"no such file or folder: {', '.join(missing)}")
    from cxr_fast.serving import inference  # after validation: bad arguments fail before TensorFlow loads

    model, threshold = inference.load(FLAGS.model)
    files = inference.expand(paths)
    if not files:
        raise errors.InputError(f"no image files in {', '.join(paths)}")
    if FLAGS.gradcam_dir:
        os.makedirs(FLAGS.gradcam_dir, exist_ok=True)
    results = inference.stream(model, threshold, files, FLAGS.batch_size, FLAGS.max_image_pixels,
                               FLAGS.gradcam_dir, findings=inference.findings_of(FLAGS.model),
                               classes=inference.classes_of(FLAGS.model))
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
