"""The peer NVIDIA's own EfficientNet and ResNet examples use: a DALI pipeline, here on the CPU.

    pip install -e ".[peer-dali]"   # nvidia-dali-cuda120 (~420 MB; runs CPU-only, device_id=None)
    python -m benchmarks.peer_dali --data_root=chest_xray --records=records/kermany128 --json=dali.json

Runs in its own process, without TensorFlow. Two forms, both the reference's augmentation on
the CPU's threads (one per core), batch 64, shuffled:
- full-size: `fn.readers.file` over train/'s JPEGs, decoded to gray and resized to 128 px every
  epoch (as the reference and the other peers' full-size rows);
- records: `fn.readers.tfrecord` over cxr_fast's own 128 px JPEG training shards (an index per
  shard written here in DALI's format, as its `tfrecord2idx` writes it), decoded every epoch
  (DALI keeps no decoded cache); its preparation is the conversion cxr_fast's rows pay.
The augmentation: `fn.transforms` rotation (30 degrees), shear (0.2 degrees, as
ImageDataGenerator reads `shear_range`), zoom (0.8-1.2 per axis) and shifts (0.2), composed
about the centre into one matrix per image and applied by one `fn.warp_affine` (bilinear), then
`fn.flip` at random. What differs from the reference: DALI's warp fills with a constant where
ImageDataGenerator repeats the nearest edge pixel.
"""
import glob
import os
import struct

from absl import app, flags

from benchmarks.epochs import BATCH, SIZE, STEADY_EPOCHS, print_and_save, python_stream
from cxr_fast import atomic  # no TensorFlow behind it



def write_index(shard, path):
    """DALI's TFRecord index of `shard`: "offset size" per record (length, CRC, data, CRC framing)."""
    lines, size = [], os.path.getsize(shard)
    with open(shard, "rb") as f:
        while f.tell() < size:
            offset = f.tell()
            length = struct.unpack("<Q", f.read(8))[0]
            f.seek(4 + length + 4, os.SEEK_CUR)
            lines.append(f"{offset} {f.tell() - offset}\n")
    atomic.write_text(path, "".join(lines))
    return path


def _augmented(images):
    """The reference's affine ranges as one matrix per image, one warp, then a random flip."""
    from nvidia.dali import fn, types

    centre = (SIZE / 2, SIZE / 2)
    matrix = fn.transforms.rotation(angle=fn.random.uniform(range=(-30.0, 30.0)), center=centre)
    matrix = fn.transforms.shear(matrix, angles=fn.random.uniform(range=(-0.2, 0.2), shape=[2]) * (1.0, 0.0),
                                 center=centre)
    matrix = fn.transforms.scale(matrix, scale=fn.random.uniform(range=(0.8, 1.2), shape=[2]), center=centre)
    matrix = fn.transforms.translation(matrix, offset=fn.random.uniform(range=(-0.2 * SIZE, 0.2 * SIZE), shape=[2]))
    images = fn.warp_affine(images, matrix=matrix, fill_value=0, inverse_map=False, interp_type=types.INTERP_LINEAR)
    return fn.flip(images, horizontal=fn.random.coin_flip())


def full_size_pipeline(image_dir, cores, seed=0):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=BATCH, num_threads=cores, device_id=None, seed=seed)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=image_dir, random_shuffle=True, name="reader")
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.GRAY)
        return _augmented(fn.resize(images, resize_x=SIZE, resize_y=SIZE)), labels

    return pipe()


def records_pipeline(shards, indexes, cores, seed=0):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import tfrecord as tfrec

    features = {"image/encoded": tfrec.FixedLenFeature((), tfrec.string, ""),
                "image/class/label": tfrec.FixedLenFeature([1], tfrec.int64, -1)}

    @pipeline_def(batch_size=BATCH, num_threads=cores, device_id=None, seed=seed)
    def pipe():
        records = fn.readers.tfrecord(path=shards, index_path=indexes, features=features, random_shuffle=True,
                                      name="reader")
        images = fn.decoders.image(records["image/encoded"], device="cpu", output_type=types.GRAY)
        return _augmented(images), records["image/class/label"]

    return pipe()


def batches(pipe):
    """An endless iterator of (images, labels) batches of a built DALI pipeline."""
    pipe.build()
    while True:
        images, labels = pipe.run()
        yield images, labels


def run(data_root, records, work_dir, epochs, preparation):
    """The two end-to-end rows; `records`: cxr_fast's record set of the same films (its train
    shards), whose conversion took `preparation` seconds."""
    cores = os.cpu_count() or 1
    image_dir = os.path.join(data_root, "train")
    films = sum(len(names) for _, _, names in os.walk(image_dir))
    rows = [python_stream("NVIDIA DALI on the CPU, full-size JPEG -> 128 px + augmentation",
                          batches(full_size_pipeline(image_dir, cores)), films, cores, epochs, 1)]
    shards = sorted(glob.glob(os.path.join(records, "train-*.tfrecord")))
    os.makedirs(work_dir, exist_ok=True)
    indexes = [write_index(s, os.path.join(work_dir, os.path.basename(s) + ".idx")) for s in shards]
    rows.append(python_stream("NVIDIA DALI on the CPU, cxr_fast's 128 px records + augmentation",
                              batches(records_pipeline(shards, indexes, cores)), films, cores, epochs,
                              min(STEADY_EPOCHS, epochs), preparation))
    return rows


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    rows = run(FLAGS.data_root, FLAGS.records, FLAGS.work_dir, FLAGS.epochs, FLAGS.preparation_s)
    print_and_save(rows, FLAGS.epochs, FLAGS.json)


if __name__ == "__main__":
    flags.DEFINE_string("data_root", None, "Kermany-layout folder: train/, val/, test/ of full-size films.")
    flags.DEFINE_string("records", None, "cxr_fast's 128 px JPEG record set of the same films.")
    flags.DEFINE_string("work_dir", "/tmp/cxr_fast_dali", "Folder for the shard indexes.")
    flags.DEFINE_float("preparation_s", 0.0, "Seconds the record set's conversion took (its preparation).")
    flags.DEFINE_integer("epochs", 30, "Epochs (the reference trained 30).")
    flags.DEFINE_string("json", None, "Write the rows here as JSON.")
    flags.mark_flags_as_required(["data_root", "records"])
    app.run(main)
