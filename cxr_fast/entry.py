"""The wrapper every command runs its `main` through: the topology switch, then one-line errors.

    if __name__ == "__main__":
        entry.run_main(main)
"""
import os
import sys

from absl import app, flags, logging

from cxr_fast import topology
from cxr_fast.errors import ClusterError, InputError, TrainingError


def run_main(main, devices=True, arguments=False):
    """absl `app.run(main)`, printing `InputError` (exit status 2), `ClusterError` or `TrainingError`
    (1) as one line.

    With `devices`, CXR_FAST_CPU_DEVICES (`cxr_fast.topology`) is applied first, before `main`
    can start TensorFlow; a launcher that only starts other processes passes False and stays
    free of TensorFlow.  A command that takes no `arguments` (all settings are flags) refuses any.
    """

    # TensorFlow's INFO chatter (checkpoint sharding, SavedModel assets) buries the progress
    # lines; --verbosity=0 brings it back.
    def guarded(argv):
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            if len(argv) > 1 and not arguments:
                raise InputError(f"unexpected arguments {argv[1:]}; all settings are flags")
            if devices:
                topology.apply()
            return main(argv)
        except (InputError, ClusterError, TrainingError) as err:
            prog = os.path.basename(sys.argv[0]) or "cxr_fast"
            print(f"{prog}: error: {err}", file=sys.stderr)
            sys.exit(2 if isinstance(err, InputError) else 1)

    app.run(guarded)
