"""Writes the embedded synthetic chest film set in the Kermany folder layout.

    python -m tools.make_synthetic --output_dir=data/synthetic --num_patients=400

See `cxr_fast.data.synthetic` for what the films look like and how the PNEUMONIA sign is drawn.
"""
from absl import flags

from cxr_fast import entry, errors
from cxr_fast import config as config_lib

_SYNTHETIC = config_lib.SyntheticConfig  # the defaults, in one place
from cxr_fast.data import synthetic, synthetic_labelled

flags.DEFINE_string("output_dir", None, "Folder to write chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/ into.")
flags.DEFINE_integer("num_patients", _SYNTHETIC.num_patients, "Patients; each has 1 or more films (about 1.5 on "
                     "average).")
flags.DEFINE_integer("seed", _SYNTHETIC.seed, "Seed; the same seed writes the same files.")
flags.DEFINE_float("difficulty", _SYNTHETIC.difficulty, "0: opacities obvious, 1: barely visible.")
flags.DEFINE_list("size_range", [str(_SYNTHETIC.min_size), str(_SYNTHETIC.max_size)], "min,max film width in pixels.")
flags.DEFINE_bool("kaggle_quirks", _SYNTHETIC.kaggle_quirks, "Add the Kaggle zip's nested duplicate copy and "
                  "__MACOSX junk.")
flags.DEFINE_float("position_shift", _SYNTHETIC.position_shift, "Place each film off centre by up to this fraction "
                   "of its size (a test set of unevenly positioned patients); 0: centred, as Kermany's films mostly "
                   "are.")
flags.DEFINE_float("position_rotation", _SYNTHETIC.position_rotation, "Turn each film by up to this many degrees.")
flags.DEFINE_enum("format", _SYNTHETIC.format, ["", *config_lib.LABEL_FORMATS], "Write that set's layout and label "
                  "files (small films, see cxr_fast/data/synthetic_labelled.py) instead of Kermany's folders.")
flags.DEFINE_integer("num_workers", _SYNTHETIC.num_workers, "Drawing processes; 0 uses every core.")
flags.DEFINE_bool("overwrite", _SYNTHETIC.overwrite, "Replace a non-empty --output_dir.")
flags.mark_flags_as_required(["output_dir"])
FLAGS = flags.FLAGS


def config_from_flags():
    try:
        min_size, max_size = (int(v) for v in FLAGS.size_range)
    except ValueError:
        raise errors.InputError(f"--size_range={','.join(FLAGS.size_range)} must be two integers, e.g. 900,2000") \
            from None
    return config_lib.SyntheticConfig(
        output_dir=FLAGS.output_dir, num_patients=FLAGS.num_patients, seed=FLAGS.seed,
        difficulty=FLAGS.difficulty, min_size=min_size, max_size=max_size, kaggle_quirks=FLAGS.kaggle_quirks,
        position_shift=FLAGS.position_shift, position_rotation=FLAGS.position_rotation, format=FLAGS.format,
        num_workers=FLAGS.num_workers, overwrite=FLAGS.overwrite,
    ).validate()


def main(argv):
    config = config_from_flags()
    if config.format:
        synthetic_labelled.generate(config)
    else:
        synthetic.generate(config)


def run():
    """The console script (`cxr-fast-make-synthetic`) and `python -m`."""
    entry.run_main(main)


if __name__ == "__main__":
    run()
