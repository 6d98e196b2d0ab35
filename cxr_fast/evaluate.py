"""Evaluates a trained model on one split: predictions, metrics with confidence intervals, plots, report.

    python -m cxr_fast.evaluate --model_dir=runs/model2 --data_dir=records/kermany128 --split=test

See `cxr_fast.evaluation.scoring` for what is written where.
"""
from absl import flags

from cxr_fast import atomic, entry, errors
from cxr_fast import config as config_lib
from cxr_fast.data import recordset

flags.DEFINE_string("model_dir", None, "A training output folder (holds model.keras).")
flags.DEFINE_string("data_dir", None, "Record set written by tools.make_tfrecords.")
flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Split to score.")
flags.DEFINE_string("threshold", "0.5", "Decision threshold, or auto: chosen on val (Youden's J, or the "
                    "highest threshold reaching --target_recall; one per finding for a multi-label set) and "
                    "saved as model_dir/threshold.json.")
flags.DEFINE_float("target_recall", 0.0, "With --threshold=auto: required recall (sensitivity), e.g. 0.95.")
flags.DEFINE_string("output_dir", "", "Default: {model_dir}/eval_{split}.")
flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples (of patients) for 95% intervals; 0 skips them.")
flags.DEFINE_integer("batch_size", 64, "Images per prediction batch.")
flags.DEFINE_integer("samples", 8, "Images in the sample and mistake grids.")
flags.DEFINE_bool("verify_records", False, "Check every shard's sha256 and record count against the manifest first.")
flags.DEFINE_bool("overwrite", False, "Replace an --output_dir that holds other files than an earlier evaluation's "
                  "(never the model or the record set).")
flags.mark_flags_as_required(["model_dir", "data_dir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise errors.InputError(f"unexpected arguments {argv[1:]}; all settings are flags")
    config = config_lib.EvalConfig(
        model_dir=FLAGS.model_dir, data_dir=FLAGS.data_dir, split=FLAGS.split, threshold=FLAGS.threshold,
        target_recall=FLAGS.target_recall, output_dir=FLAGS.output_dir, bootstrap=FLAGS.bootstrap,
        batch_size=FLAGS.batch_size, samples=FLAGS.samples, overwrite=FLAGS.overwrite,
        verify=FLAGS.verify_records).validate()
    recordset.open_record_set(config.data_dir).check_split(config.split)  # no TensorFlow yet: fails in 0.2 s
    atomic.check_output_dir(config.output_path(), config.overwrite, "--output_dir", "evaluate", config.inputs())
    from cxr_fast.evaluation import scoring  # after validation: bad flags and a bad --data_dir fail before TF loads

    scoring.evaluate(config)


def run():
    """The console script (`cxr-fast-evaluate`) and `python -m`."""
    entry.run_main(main)


if __name__ == "__main__":
    run()
