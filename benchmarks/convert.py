"""Conversion throughput: `tools.make_tfrecords` on full-size JPEGs with 1 worker and with every core.

    python -m benchmarks.convert --image_dir=chest_xray --json=convert.json
"""
import os
import shutil
import tempfile

from absl import app, flags

from benchmarks import common
from cxr_fast.config import ConvertConfig
from cxr_fast.data import writer


def run(image_dir, image_size=128, log=print):
    variants = []
    for workers in sorted({1, os.cpu_count() or 1}):
        output = tempfile.mkdtemp(prefix="cxr_fast_convert_bench_")
        try:
            manifest = writer.convert(ConvertConfig(data_dir=image_dir, output_dir=output, overwrite=True,
                                                             image_size=image_size, num_workers=workers),
                                               log=lambda *_: None)
        finally:
            shutil.rmtree(output, ignore_errors=True)
        rate = manifest["timing"]["convert_images_per_second"]
        log(f"make_tfrecords, {workers} workers: {rate:,.0f} img/s")
        variants.append({"name": f"make_tfrecords {workers} worker{'s' if workers > 1 else ''}", "img_per_s": rate,
                         "cores": workers, "settings": {"image_size": image_size, "encoding": "jpeg",
                                                        "images": manifest["images_written"]}})
    return variants


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    variants = run(FLAGS.image_dir, FLAGS.image_size)
    print(common.table(variants))
    common.write_json(FLAGS.json, {"benchmark": "convert", "machine": common.machine(), "variants": variants})


if __name__ == "__main__":
    flags.DEFINE_string("image_dir", None, "Folder of full-size chest X-ray JPEGs (NORMAL/ PNEUMONIA/ below).")
    flags.DEFINE_integer("image_size", 128, "Stored size.")
    flags.DEFINE_string("json", None, "Write the results here as JSON.")
    flags.mark_flags_as_required(["image_dir"])
    app.run(main)
