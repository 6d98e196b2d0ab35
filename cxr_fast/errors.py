"""User-facing errors.

Library code raises `InputError` for anything the user can fix (a path, a flag, a file);
its message names the file or flag and says what to do.  Entry points run their `main`
through `cxr_fast.entry.run_main`, so the user sees `prog: error: message` and a non-zero exit
code instead of a traceback from deep inside TensorFlow.
"""


class InputError(ValueError):
    """Bad input the user can fix; the message names the file or flag and the remedy."""


class ClusterError(RuntimeError):
    """A multi-worker run lost a worker or a collective timed out; the message says what to do."""


class TrainingError(RuntimeError):
    """A run that cannot go on as configured (its loss diverged); the message names the flags to change."""
