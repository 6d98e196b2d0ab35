"""What a run leaves in model_dir so that it can be stopped at any moment and continued.

`checkpoints/` holds TensorFlow checkpoints of the model, the optimizer (its learning rate
included) and the position (epoch, step in epoch, global step); `checkpoints/state.json`,
written atomically after each checkpoint, names the newest one and carries what a TF
checkpoint cannot: the history so far and the callbacks' counters (ReduceLROnPlateau and
EarlyStopping patience, the best val_loss).  A run killed mid-epoch resumes at the step it had
reached, so it still ends after the configured number of epochs.

`BestWeights` does what the reference's ModelCheckpoint(monitor="val_loss", save_best_only=True,
save_weights_only=True) did, through a temporary file, so best.weights.h5 is never half-written.
It is a small public-API callback rather than a ModelCheckpoint subclass: ModelCheckpoint has
no public hook for where it writes.
"""
import csv
import io
import json
import math
import os

import keras
import tensorflow as tf

from cxr_fast import atomic

STATE = "state.json"


class BestWeights(keras.callbacks.Callback):
    """Saves the model's weights to `filepath` whenever `monitor` reaches a new (finite) minimum."""

    def __init__(self, filepath, monitor="val_loss"):
        super().__init__()
        self.filepath, self.monitor, self.best = filepath, monitor, math.inf

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None or not math.isfinite(current) or current >= self.best:
            return
        self.best = float(current)
        with atomic.replacing(self.filepath) as temporary:
            self.model.save_weights(temporary)


def callback_state(callbacks):
    """The counters of the stateful reference callbacks, as JSON-able values."""
    state = {}
    for callback in callbacks:
        fields = {"ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
                  "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
                  "BestWeights": ("best",)}.get(type(callback).__name__, ())
        values = {f: getattr(callback, f, None) for f in fields}
        state[type(callback).__name__] = {k: (float(v) if isinstance(v, float) or hasattr(v, "dtype") else v)
                                          for k, v in values.items()}
    return state


def restore_callback_state(callbacks, state):
    for callback in callbacks:
        for field, value in state.get(type(callback).__name__, {}).items():
            if value is not None:
                setattr(callback, field, value)


class RunState:
    """Checkpoints and state.json in `{write_dir}/checkpoints`; history files in `write_dir`.

    A run resumes from `read_dir` (default: `write_dir`): in a multi-worker run every worker
    restores the chief's checkpoint in model_dir, while the others write to private folders.
    """

    def __init__(self, write_dir, checkpoint, read_dir=None):
        self.write_dir = write_dir
        self.folder = os.path.join(write_dir, "checkpoints")
        self.read_folder = os.path.join(read_dir or write_dir, "checkpoints")
        self.manager = tf.train.CheckpointManager(checkpoint, self.folder, max_to_keep=2)
        self.checkpoint = checkpoint

    def load(self):
        """The saved state dict (with its checkpoint restored), or None for a fresh run."""
        path = os.path.join(self.read_folder, STATE)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            state = json.load(f)
        self.checkpoint.restore(os.path.join(self.read_folder, state["checkpoint"])).assert_existing_objects_matched()
        return state

    def save(self, state, global_step):
        path = self.manager.save(checkpoint_number=global_step)
        atomic.write_json(os.path.join(self.folder, STATE), {**state, "checkpoint": os.path.basename(path)})

    def write_history(self, history):
        atomic.write_json(os.path.join(self.write_dir, "history.json"), history)
        keys = list(dict.fromkeys(k for row in history for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic.write_text(os.path.join(self.write_dir, "history.csv"), buffer.getvalue())


def has_state(model_dir):
    return os.path.isfile(os.path.join(model_dir, "checkpoints", STATE))
