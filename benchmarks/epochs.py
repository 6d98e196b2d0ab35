"""What every input benchmark shares, so both sides of a comparison do the same work: the image
size and batch, and whole-epoch timing of Python-consumed streams (end_to_end, the PyTorch peer).

No TensorFlow here: the peer runs in its own process (torch and TensorFlow in one process
crashed here: torch's triton import segfaulted after TensorFlow had loaded).
"""
import time

from cxr_fast import atomic  # no TensorFlow behind it

SIZE, BATCH = 128, 64
# A stream whose every epoch costs the same (nothing cached after its first) is measured on this
# many epochs and multiplied to the 30 ("extrapolated from 3" in the table).
STEADY_EPOCHS = 3


def endless(batches):
    """An iterable that ends each epoch (a DataLoader) as one endless iterator."""
    while True:
        yield from batches


def epoch_seconds(batches, images_per_epoch, epochs):
    """Wall seconds of `epochs` full epochs pulled from an endless `batches` iterator."""
    start, seen = time.perf_counter(), 0
    while seen < images_per_epoch * epochs:
        batch = next(batches)
        seen += len(batch[0])
    return time.perf_counter() - start


def python_stream(name, batches, films, cores, epochs, measured_epochs, preparation=0.0):
    """An end-to-end row: `measured_epochs` measured, `epochs` reported (extrapolated when fewer)."""
    seconds = epoch_seconds(batches, films, measured_epochs)
    return {"name": name, "cores": cores, "preparation_s": preparation, "epoch_images": films,
            "measured_epochs": measured_epochs, "stream_s": seconds / measured_epochs * epochs,
            "extrapolated": measured_epochs < epochs}


def print_and_save(rows, epochs, json_path=None):
    """A peer process's output: a line per row, and the rows as JSON for end_to_end."""
    for row in rows:
        print(f"{row['name']}: {row['preparation_s']:,.1f} s preparation + {row['stream_s']:,.1f} s for "
              f"{epochs} epochs (measured {row['measured_epochs']})")
    if json_path:
        atomic.write_json(json_path, rows)
