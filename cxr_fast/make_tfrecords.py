"""Turns a chest X-ray folder or label file into a split, sharded, checksummed TFRecord set.

    python -m tools.make_tfrecords --data_dir=chest_xray --output_dir=records/kermany128
    python -m tools.make_tfrecords --data_dir=nih --labels=nih/Data_Entry_2017.csv --format=nih \
        --view=PA,AP --output_dir=records/nih256 --image_size=256

Writes `{split}-{i:05d}-of-{n:05d}.tfrecord` shards, `manifest.json` and `splits.csv`
(see `cxr_fast.data.writer`).  The default split keeps every patient in one split;
`--split=image` reproduces the reference report's leaky image-level split.
"""
from absl import flags

from cxr_fast import entry
from cxr_fast import config as config_lib

_CONVERT = config_lib.ConvertConfig  # the defaults, in one place

flags.DEFINE_string("data_dir", None, "Folder with NORMAL/ and PNEUMONIA/ folders at any depth (the Kaggle or "
                    "Mendeley download as unpacked, or a flat two-folder layout).")
flags.DEFINE_string("output_dir", None, "Folder for the shards, manifest.json and splits.csv.")
flags.DEFINE_enum("split", _CONVERT.split, ["patient", "image", "official"],
                  "patient: no patient in two splits (default); image: the reference's per-class image split; "
                  "official: the data set's own test folder, val carved from train by patient.")
flags.DEFINE_list("split_fractions", [str(f) for f in _CONVERT.split_fractions], "train,val,test fractions (sum 1).")
flags.DEFINE_integer("seed", _CONVERT.seed, "Seed of the split and of the record order.")
flags.DEFINE_integer("image_size", _CONVERT.image_size, "Stored size (square, aspect not kept, as in the reference); "
                     "0 keeps the full resolution.")
flags.DEFINE_enum("encoding", _CONVERT.encoding, ["jpeg", "png", "raw"], "Stored encoding of the 1-channel images.")
flags.DEFINE_integer("jpeg_quality", _CONVERT.jpeg_quality, "JPEG quality for --encoding=jpeg.")
flags.DEFINE_float("shard_size_mb", _CONVERT.shard_size_mb, "Largest shard size in MB (shards of 100 MB and up read "
                   "fastest).")
flags.DEFINE_integer("min_shards", _CONVERT.min_shards, "At least this many shards per split (records permitting), "
                     "of equal record counts: each training host reads its own shards, so write 10 or more per host.")
flags.DEFINE_integer("num_workers", _CONVERT.num_workers, "Decoding processes; 0 uses every core.")
flags.DEFINE_integer("max_image_pixels", _CONVERT.max_image_pixels,
                     "Images with more pixels are skipped as decompression bombs.")
flags.DEFINE_bool("overwrite", _CONVERT.overwrite, "Replace a non-empty --output_dir.")
flags.DEFINE_string("labels", _CONVERT.labels, "A label file instead of NORMAL/PNEUMONIA folders (image paths "
                    "relative to --data_dir); see cxr_fast/data/labelfiles.py and the README per data set.")
flags.DEFINE_enum("format", _CONVERT.format, ["", *config_lib.LABEL_FORMATS], "The label file's format.")
flags.DEFINE_string("path_column", _CONVERT.path_column, "--format=csv: the column of image paths.")
flags.DEFINE_string("patient_column", _CONVERT.patient_column, "--format=csv: the column of patient ids.")
flags.DEFINE_list("label_columns", list(_CONVERT.label_columns), "--format=csv: one column (a binary set) or several "
                  "(multi-label) of 1 / 0 / -1 (uncertain) / blank (negative).")
flags.DEFINE_string("view_column", _CONVERT.view_column, "--format=csv: the column of view positions (for --view).")
flags.DEFINE_enum("uncertain", _CONVERT.uncertain, ["ignore", "ones", "zeros"], "Uncertain (-1) labels: ignore "
                  "(masked out of loss and metrics), ones or zeros (CheXpert's U-Ignore, U-Ones, U-Zeros).")
flags.DEFINE_list("view", list(_CONVERT.views), "Keep only these view positions, e.g. PA,AP (frontal films).")
flags.mark_flags_as_required(["data_dir", "output_dir"])
FLAGS = flags.FLAGS


def config_from_flags():
    return config_lib.ConvertConfig(
        data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir, split=FLAGS.split,
        split_fractions=config_lib.parse_floats(FLAGS.split_fractions, "--split_fractions", "0.6,0.2,0.2"),
        seed=FLAGS.seed, image_size=FLAGS.image_size,
        encoding=FLAGS.encoding, jpeg_quality=FLAGS.jpeg_quality, shard_size_mb=FLAGS.shard_size_mb,
        min_shards=FLAGS.min_shards, num_workers=FLAGS.num_workers, max_image_pixels=FLAGS.max_image_pixels,
        overwrite=FLAGS.overwrite, labels=FLAGS.labels, format=FLAGS.format, path_column=FLAGS.path_column,
        patient_column=FLAGS.patient_column, label_columns=tuple(FLAGS.label_columns), view_column=FLAGS.view_column,
        uncertain=FLAGS.uncertain, views=tuple(v.strip().upper() for v in FLAGS.view),
    ).validate()


def main(argv):
    config = config_from_flags()
    # Imported here, not above: spawned decode workers re-import this module and must not load TensorFlow.
    from cxr_fast.data import writer

    writer.convert(config, log=print)


def run():
    """The console script (`cxr-fast-make-tfrecords`) and `python -m`."""
    entry.run_main(main)


if __name__ == "__main__":
    run()
