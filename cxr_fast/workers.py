"""Process pools for CPU-bound per-file work (decoding, drawing).

Workers are spawned, so they start clean on every platform; a spawned worker imports the
parent's `__main__` module again, which is why entry points that use a pool import
TensorFlow-heavy modules inside `main()` only: the workers then load Pillow and numpy and
nothing else (seconds of start-up and hundreds of MB less per worker on a many-core host).
One worker runs in the calling process instead, with no start-up at all.
"""
import multiprocessing
import os


class _InProcessPool:
    """The part of multiprocessing.Pool used by cxr_fast, run in the calling process."""

    def imap(self, fn, items, chunksize=1):
        return map(fn, items)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def pool(workers):
    """A pool of `workers` processes (0: one per core)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return _InProcessPool()
    return multiprocessing.get_context("spawn").Pool(workers)
