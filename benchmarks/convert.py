"""Conversion throughput: `tools.make_tfrecords` on full-size JPEGs with 1 worker and with every core.

    python -m benchmarks.convert --image_dir=chest_xray/train --json=convert.json [--films=1500]
"""
import os
import tempfile

from absl import app, flags

from benchmarks import common
from cxr_fast.config import ConvertConfig
from cxr_fast.data import index as dataset_index
from cxr_fast.data import writer


FILMS = 1500  # a sample converts at the whole folder's rate per film, in a quarter of Kermany's time


def sample(image_dir, films, target):
    """A folder of symbolic links to an even sample of `films` of `image_dir`'s class folders."""
    images, _ = dataset_index.scan(image_dir)
    for image in images[::max(1, len(images) // films)][:films]:
        link = os.path.join(target, *image.path.split("/"))
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(os.path.abspath(image_dir), *image.path.split("/")), link)
    return target


def run(image_dir, image_size=128, log=print, films=None):
    """make_tfrecords' images/s on 1 worker and on every core; on an even sample of `films` of the
    folder when given (the rate per film is the folder's: each film is decoded, resized and encoded alone)."""
    variants = []
    with tempfile.TemporaryDirectory(prefix="cxr_fast_convert_bench_") as scratch:
        source = sample(image_dir, films, os.path.join(scratch, "films")) if films else image_dir
        for workers in sorted({1, os.cpu_count() or 1}):
            manifest = writer.convert(ConvertConfig(data_dir=source, output_dir=os.path.join(scratch, f"{workers}"),
                                                    image_size=image_size, num_workers=workers), log=lambda *_: None)
            rate = manifest["timing"]["convert_images_per_second"]
            log(f"make_tfrecords, {workers} workers: {rate:,.0f} img/s")
            variants.append({"name": f"make_tfrecords {workers} worker{'s' if workers > 1 else ''}", "img_per_s": rate,
                             "cores": workers, "settings": {"image_size": image_size, "encoding": "jpeg",
                                                            "images": manifest["images_written"]}})
    return variants


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    variants = run(FLAGS.image_dir, FLAGS.image_size, films=FLAGS.films)
    print(common.table(variants))
    common.write_json(FLAGS.json, {"benchmark": "convert", "machine": common.machine(), "variants": variants})


if __name__ == "__main__":
    flags.DEFINE_string("image_dir", None, "Folder of full-size chest X-ray JPEGs (NORMAL/ PNEUMONIA/ below).")
    flags.DEFINE_integer("image_size", 128, "Stored size.")
    flags.DEFINE_integer("films", 0, "Convert an even sample of this many films (0: the whole folder).")
    flags.DEFINE_string("json", None, "Write the results here as JSON.")
    flags.mark_flags_as_required(["image_dir"])
    app.run(main)
