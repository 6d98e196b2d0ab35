"""Input pipeline images/s, side by side with the reference's own pipeline, in one run.

    python -m benchmarks.input_pipeline --image_dir=chest_xray/train --tfrecord_dir=/tmp/bench \
        --seconds=5 --json=pipeline.json

`--image_dir` holds NORMAL/ and PNEUMONIA/ folders of full-size images (what the reference read).
`--tfrecord_dir` holds (or receives, converted from `--image_dir` by `tools.make_tfrecords`'
library) one 128 px record set per encoding: `jpeg/`, `png/`, `raw/`.

Variants, all at 128x128, batch 64: the reference (tf_keras ImageDataGenerator.flow_from_directory
with its augmentation), `keras.utils.image_dataset_from_directory`, and cxr_fast's training
pipeline for each encoding, cache off and on, on all cores (JPEG on 1 core too, the like-for-like
rows beside the reference), plus the augmentation applied to every batch of the uncached JPEG
stream (as the trainer does on the device; `record_rows`), and the JPEG pipeline
through a tf.data service on loopback (dispatcher and one worker in this process: the cost of
moving finished batches through the service, not its scaling, which needs more machines).
The JPEG set is also written as a multi-label set of the same images (`multilabel/`: a generic
CSV label file with 14 findings, the first the folder's class), so its rows read exactly the
same pixels with a 14-float label vector per record instead of one integer; beside it, both
sets trained as one (`mixed_rows`: the two measured in turns, the ratio a median of rounds).
"""
import csv
import hashlib
import io
import os
import statistics

import tensorflow as tf
from absl import app, flags

from benchmarks import common
from benchmarks.epochs import BATCH, SIZE
from cxr_fast import atomic
from cxr_fast import config as config_lib
from cxr_fast.data import index as dataset_index
from cxr_fast.data import mixture, pipeline, recordset, writer
from cxr_fast.distributed import service as data_service
from cxr_fast.training import augment



def reference_batches(image_dir):
    """The reference's pipeline: ImageDataGenerator with its settings (needs tf_keras and scipy)."""
    from tf_keras.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(rescale=1 / 255, shear_range=0.2, width_shift_range=0.2, height_shift_range=0.2,
                                   rotation_range=30, horizontal_flip=True, zoom_range=0.2, fill_mode="nearest")
    return generator.flow_from_directory(image_dir, target_size=(SIZE, SIZE), batch_size=BATCH, class_mode="binary",
                                         classes=_class_folders(image_dir), seed=0)


def _class_folders(image_dir):
    folders = {name.upper(): name for name in os.listdir(image_dir)}
    return [folders[name] for name in ("NORMAL", "PNEUMONIA") if name in folders]


def keras_directory_batches(image_dir):
    ds = tf.keras.utils.image_dataset_from_directory(
        image_dir, labels="inferred", label_mode="binary", class_names=_class_folders(image_dir),
        image_size=(SIZE, SIZE), batch_size=BATCH, shuffle=True, seed=0, verbose=False)
    return ds.repeat().prefetch(tf.data.AUTOTUNE)


def ensure_record_sets(image_dir, tfrecord_dir, encodings):
    """Converts `image_dir` once per encoding (128 px) unless a record set is already there."""
    for encoding in encodings:
        target = os.path.join(tfrecord_dir, encoding)
        if not os.path.isfile(os.path.join(target, "manifest.json")):
            writer.convert(config_lib.ConvertConfig(
                data_dir=image_dir, output_dir=target, image_size=SIZE, encoding=encoding, shard_size_mb=8,
                split_fractions=(0.8, 0.1, 0.1)), log=lambda *_: None)


MULTILABEL_FINDINGS = 14  # as ChestX-ray14 and CheXpert


def ensure_multilabel_set(image_dir, tfrecord_dir):
    """The JPEG set's images as a multi-label set (generic CSV: 14 findings, the first the class)."""
    target = os.path.join(tfrecord_dir, "multilabel")
    if os.path.isfile(os.path.join(target, "manifest.json")):
        return target
    images, _ = dataset_index.scan(image_dir)
    names = [f"finding_{k}" for k in range(MULTILABEL_FINDINGS)]
    labels_path = os.path.join(tfrecord_dir, "multilabel_labels.csv")
    rows = [[im.path, im.patient, im.label, *(int(hashlib.sha1(f"{im.path}/{k}".encode()).digest()[0] < 40)
                                              for k in range(1, MULTILABEL_FINDINGS))] for im in images]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["file", "patient", *names], *rows])
    atomic.write_text(labels_path, buffer.getvalue())
    writer.convert(config_lib.ConvertConfig(
        data_dir=image_dir, output_dir=target, image_size=SIZE, encoding="jpeg", shard_size_mb=8,
        split_fractions=(0.8, 0.1, 0.1), labels=labels_path, format="csv", path_column="file",
        patient_column="patient", label_columns=tuple(names)), log=lambda *_: None)
    return target


def with_augmentation(dataset):
    """The pipeline followed by the reference augmentation (here on the CPU; in training on the device)."""
    layer = augment.Augmentation(config_lib.AugmentConfig(), seed=0)
    return dataset.map(lambda images, labels: (layer(images, training=True), labels),
                       num_parallel_calls=tf.data.AUTOTUNE)


def mixed_stream(single, multilabel, cache):
    """The JPEG set and its multi-label twin trained as one (a proportional mix: 15 aligned findings
    per film), to set beside the multi-label set alone (14 findings): what mixing sets costs."""
    mix = mixture.open_records(f"{single.root},{multilabel.root}")
    config = config_lib.DataConfig(data_dir=mix.root, image_size=SIZE, global_batch_size=BATCH, cache=cache)
    return pipeline.train_dataset(mix, config)


MIX_ROUNDS = 3  # windows of the twin and the mix, in turns (docs/benchmarks.md: the noise seen without)


def mixed_rows(single, multilabel, seconds, batches_per_call, log=print):
    """The multi-label twin alone and the two sets as one, cache off and on, measured in turns
    (`MIX_ROUNDS` windows of seconds / 2 each, so both see the same load): rows at the median
    rates; the mix's row carries the median of the rounds' ratios, `mixed_over_single`."""
    rows, window = [], seconds / 2
    settings = {"augment": "none", "consumer": _consumer(batches_per_call),
                "measured": f"{MIX_ROUNDS} windows of {window:g} s in turns with its pair, median"}
    for cache in ("none", "memory"):
        config = config_lib.DataConfig(data_dir=multilabel.root, image_size=SIZE, global_batch_size=BATCH, cache=cache)
        twin, mixed = common.alternating_rates([pipeline.train_dataset(multilabel, config),
                                                mixed_stream(single, multilabel, cache)], window, MIX_ROUNDS,
                                               batches_per_call)
        ratio = statistics.median(m / t for m, t in zip(mixed, twin))
        rows.append({"name": f"cxr_fast jpeg multi-label ({MULTILABEL_FINDINGS} findings) cache={cache}",
                     "img_per_s": statistics.median(twin), "cores": os.cpu_count() or 1,
                     "settings": {**settings, "cache": cache, "reads": f"the same 128 px jpeg records, a "
                                  f"{MULTILABEL_FINDINGS}-float label vector each"}})
        rows.append({"name": f"cxr_fast jpeg mixed: two record sets as one cache={cache}",
                     "img_per_s": statistics.median(mixed), "cores": os.cpu_count() or 1, "mixed_over_single": ratio,
                     "settings": {**settings, "cache": cache, "reads": "the jpeg and multi-label record sets together "
                                  f"({MULTILABEL_FINDINGS + 1} aligned findings a film)"}})
        log(f"cxr_fast jpeg multi-label cache={cache}: {rows[-2]['img_per_s']:,.0f} img/s; the two sets as one: "
            f"{rows[-1]['img_per_s']:,.0f} img/s, {ratio:.3f} of it (median of {MIX_ROUNDS} rounds)")
    return rows


def _consumer(batches_per_call):
    return f"tf.function, {batches_per_call} batches a call (the trainer on a GPU)"


def record_rows(encoding, all_cores):
    """(cache, augmented, cores) of an encoding's rows: JPEG on 1 core too (beside the reference, which
    uses one) and augmented uncached (augmentation bounds that stream: a cache changes nothing); png
    and raw on all cores."""
    cores = sorted({1, all_cores}) if encoding == "jpeg" else [all_cores]
    rows = [(cache, False, n) for cache in ("none", "memory") for n in cores]
    return rows + [("none", True, n) for n in cores] if encoding == "jpeg" else rows


def run(image_dir, tfrecord_dir, seconds, encodings=("jpeg", "png", "raw"), log=print,
        batches_per_call=common.GPU_STEPS_PER_LOOP):
    """Measures every variant; returns the list of variant dicts (see the module docstring).
    `batches_per_call`: batches the tf.data variants deliver per tf.function call (the trainer's
    steps per loop on a GPU); tests lower it, as every call is at least one warm-up and one measure."""
    all_cores = os.cpu_count() or 1
    variants = []

    def add(name, batches, cores, **settings):
        if isinstance(batches, tf.data.Dataset):
            rate = common.dataset_images_per_second(batches, seconds, batches_per_call)
            settings["consumer"] = _consumer(batches_per_call)
        else:
            rate = common.images_per_second(batches, seconds)
            settings["consumer"] = "python loop"
        variants.append({"name": name, "img_per_s": rate, "cores": cores, "settings": settings})
        log(f"{name}: {rate:,.0f} img/s")

    try:
        add("reference ImageDataGenerator", reference_batches(image_dir), 1, reads="full-size JPEG (PIL)",
            resize="128 px on the host", augment="reference (scipy affine, on the host)")
    except ImportError:
        log("reference pipeline skipped: pip install --no-deps -r benchmarks/requirements-reference.txt")
    add("keras image_dataset_from_directory", keras_directory_batches(image_dir), all_cores,
        reads="full-size JPEG (TensorFlow)", resize="128 px on the host", augment="none")
    ensure_record_sets(image_dir, tfrecord_dir, encodings)
    for encoding in encodings:
        record_set = recordset.open_record_set(os.path.join(tfrecord_dir, encoding))
        reads = f"128 px {encoding} records (converted once)"
        for cache, augmented, cores in record_rows(encoding, all_cores):
            config = config_lib.DataConfig(data_dir=record_set.root, image_size=SIZE, global_batch_size=BATCH,
                                           cache=cache, num_threads=cores)
            dataset = pipeline.train_dataset(record_set, config)
            add(f"cxr_fast {encoding} cache={cache}{' +augment' if augmented else ''}",
                with_augmentation(dataset) if augmented else dataset, cores, reads=reads, cache=cache,
                augment="reference fused, on the CPU" if augmented else "none")
        if encoding == "jpeg":
            multilabel = recordset.open_record_set(ensure_multilabel_set(image_dir, tfrecord_dir))
            variants += mixed_rows(record_set, multilabel, seconds, batches_per_call, log)
            service = data_service.LocalService(num_workers=1)
            config = config_lib.DataConfig(data_dir=record_set.root, image_size=SIZE, global_batch_size=BATCH,
                                           data_service=service.target, service_job="benchmark")
            add(f"cxr_fast {encoding} via tf.data service", pipeline.train_dataset(record_set, config),
                all_cores, reads=reads, cache="none", augment="none", service="1 worker, loopback")
            service.stop()
    reference = next((v["img_per_s"] for v in variants if v["name"].startswith("reference")), None)
    for v in variants:
        v["ratio_to_reference"] = v["img_per_s"] / reference if reference else None
    return variants


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    variants = run(FLAGS.image_dir, FLAGS.tfrecord_dir, FLAGS.seconds)
    payload = {"benchmark": "input_pipeline", "machine": common.machine(),
               "config": {"image_size": SIZE, "batch_size": BATCH, "seconds": FLAGS.seconds,
                          "image_dir": FLAGS.image_dir}, "variants": variants}
    print(common.table(variants))
    common.write_json(FLAGS.json, payload)


if __name__ == "__main__":
    flags.DEFINE_string("image_dir", None, "Folder with NORMAL/ and PNEUMONIA/ image folders (full size).")
    flags.DEFINE_string("tfrecord_dir", None, "Folder with (or for) jpeg/, png/, raw/ record sets.")
    flags.DEFINE_float("seconds", 5.0, "Measuring window per variant, after warm-up.")
    flags.DEFINE_string("json", None, "Write the results here as JSON.")
    flags.mark_flags_as_required(["image_dir", "tfrecord_dir"])
    app.run(main)
