"""cxr_fast: a high-throughput TensorFlow training pipeline for chest X-ray classifiers.

The stages, lowest first; a module imports only from its own stage and the ones listed before
it (tests/test_layering.py checks this, and that there are no import cycles):
    config, errors, atomic, workers, topology, entry   small shared modules at the top of the package
    tasks/         binary or one sigmoid per finding: head, labels, loss, scores, answers
    data/          files -> records -> tf.data batches
    distributed/   where a run computes: strategy, precision, XLA; local clusters; tf.data service
    serving/       a trained model on new images: loading, classifying, Grad-CAM, SavedModel
    evaluation/    scoring a split, each task's report, plots
    training/      model, device-side augmentation, compiled steps, the loop, checkpoints
    train, evaluate, predict, export   entry points: parse flags, build a config, call one function

Importing the package selects TensorFlow's pooling (BFC) allocator for host memory, unless the
environment already says otherwise.  TensorFlow's default host allocator is malloc; once a
`tf.distribute` input iterator exists (every training run has one), glibc serves each batch
the input pipeline assembles (4 MB at 256 x 128 px) with a fresh mmap, and the kernel zeroes and
maps its pages again: measured on the 2-core CI machine, 2 million page faults in 8 s and the
cached input stream at 47,000-70,000 img/s instead of 90,000-157,000 with the pool (docs/benchmarks.md,
"How the pipeline reaches these numbers").  TensorFlow reads the setting when it first allocates host memory, so it
must be set before the first TensorFlow operation, which importing cxr_fast does.  The pool's
limit is the machine's memory (TensorFlow's default is 64 GB, below a big host's decoded cache).
"""
import os


def _host_allocator(environ=os.environ):
    environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):  # no sysconf names on this platform: keep TF's default
        return
    environ.setdefault("TF_CPU_BFC_MEM_LIMIT_IN_MB", str(memory_mb))


_host_allocator()

__version__ = "0.1.0"
