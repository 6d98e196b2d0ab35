"""User-facing errors and the wrapper that turns them into one clear line.

Library code raises `InputError` for anything the user can fix (a path, a flag, a file);
its message names the file or flag and says what to do.  Entry points run their `main`
through `run_main`, so the user sees `prog: error: message` and a non-zero exit code
instead of a traceback from deep inside TensorFlow.
"""
import os
import sys

from absl import app, flags, logging


class InputError(ValueError):
    """Bad input the user can fix; the message names the file or flag and the remedy."""


class ClusterError(RuntimeError):
    """A multi-worker run lost a worker or a collective timed out; the message says what to do."""


def run_main(main):
    """absl `app.run(main)`, printing `InputError` (exit status 2) or `ClusterError` (1) as one line."""

    # TensorFlow's INFO chatter (checkpoint sharding, SavedModel assets) buries the progress
    # lines; --verbosity=0 brings it back.
    def guarded(argv):
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            from cxr_fast import topology  # CXR_FAST_CPU_DEVICES, before TensorFlow builds its devices

            topology.apply()
            return main(argv)
        except (InputError, ClusterError) as err:
            prog = os.path.basename(sys.argv[0]) or "cxr_fast"
            print(f"{prog}: error: {err}", file=sys.stderr)
            sys.exit(2 if isinstance(err, InputError) else 1)

    app.run(guarded)
