"""Process pools for CPU-bound per-file work (decoding, drawing).

Workers are spawned, so they start clean on every platform; a spawned worker imports the
parent's `__main__` module again, which is why entry points that use a pool import
TensorFlow-heavy modules inside `main()` only: the workers then load Pillow and numpy and
nothing else (seconds of start-up and hundreds of MB less per worker on a many-core host).
One worker runs in the calling process instead, with no start-up at all.

A worker that dies (the kernel's OOM killer, a signal) ends the work with `WorkerDied`, naming
how far the results had come, instead of leaving the caller waiting forever (as
multiprocessing.Pool does): the pool is concurrent.futures' process pool, which notices.
"""
import concurrent.futures
import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool


class WorkerDied(RuntimeError):
    """A worker process died; `index`: the first item whose result had not come back."""

    def __init__(self, index):
        super().__init__(f"a worker process died before item {index} was done")
        self.index = index


class _InProcessPool:
    """The part of multiprocessing.Pool used by cxr_fast, run in the calling process."""

    def imap(self, fn, items, chunksize=1):
        return map(fn, items)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _ProcessPool:
    """`imap` over spawned worker processes, results in order; a dead worker raises WorkerDied."""

    def __init__(self, workers):
        self._executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"))

    def imap(self, fn, items, chunksize=1):
        done = 0
        try:
            for result in self._executor.map(fn, items, chunksize=chunksize):
                yield result
                done += 1
        except BrokenProcessPool:
            raise WorkerDied(done) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._executor.shutdown(wait=True, cancel_futures=True)
        return False


def pool(workers):
    """A pool of `workers` processes (0: one per core)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return _InProcessPool()
    return _ProcessPool(workers)
