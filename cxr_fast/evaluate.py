"""Evaluates a trained model on one split: predictions, metrics with confidence intervals, plots, report.

    python -m cxr_fast.evaluate --model_dir=runs/model2 --data_dir=records/kermany128 --split=test

See `cxr_fast.evaluation.scoring` for what is written where.
"""
from absl import flags

from cxr_fast import atomic, entry
from cxr_fast import config as config_lib
from cxr_fast.data import recordset

_EVAL = config_lib.EvalConfig  # the defaults, in one place

flags.DEFINE_string("model_dir", None, "A training output folder (holds model.keras).")
flags.DEFINE_string("data_dir", None, "Record set written by tools.make_tfrecords.")
flags.DEFINE_enum("split", _EVAL.split, ["train", "val", "test"], "Split to score.")
flags.DEFINE_string("threshold", _EVAL.threshold, "Decision threshold, or auto: chosen on val (Youden's J, or the "
                    "highest threshold reaching --target_recall; one per finding for a multi-label set) and saved as "
                    "model_dir/threshold.json.")
flags.DEFINE_float("target_recall", _EVAL.target_recall, "With --threshold=auto: required recall (sensitivity), e.g. "
                   "0.95.")
flags.DEFINE_string("output_dir", _EVAL.output_dir, "Default: {model_dir}/eval_{split}.")
flags.DEFINE_integer("bootstrap", _EVAL.bootstrap, "Bootstrap resamples (of patients) for 95% intervals; 0 skips them.")
flags.DEFINE_integer("batch_size", _EVAL.batch_size, "Images per prediction batch.")
flags.DEFINE_integer("samples", _EVAL.samples, "Images in the sample and mistake grids.")
flags.DEFINE_bool("verify_records", _EVAL.verify, "Check every shard's sha256 and record count against the manifest "
                  "first.")
flags.DEFINE_bool("overwrite", _EVAL.overwrite, "Replace an --output_dir that holds other files than an earlier "
                  "evaluation's (never the model or the record set).")
flags.mark_flags_as_required(["model_dir", "data_dir"])
FLAGS = flags.FLAGS


def config_from_flags():
    return config_lib.EvalConfig(
        model_dir=FLAGS.model_dir, data_dir=FLAGS.data_dir, split=FLAGS.split, threshold=FLAGS.threshold,
        target_recall=FLAGS.target_recall, output_dir=FLAGS.output_dir, bootstrap=FLAGS.bootstrap,
        batch_size=FLAGS.batch_size, samples=FLAGS.samples, overwrite=FLAGS.overwrite,
        verify=FLAGS.verify_records).validate()


def main(argv):
    config = config_from_flags()
    recordset.open_record_set(config.data_dir).check_split(config.split)  # no TensorFlow yet: fails in 0.2 s
    atomic.check_output_dir(config.output_path(), config.overwrite, "--output_dir", "evaluate", config.inputs())
    from cxr_fast.evaluation import scoring  # after validation: bad flags and a bad --data_dir fail before TF loads

    scoring.evaluate(config)


def run():
    """The console script (`cxr-fast-evaluate`) and `python -m`."""
    entry.run_main(main)


if __name__ == "__main__":
    run()
