"""Checkpoint helpers: the atomic best-weights file and the callbacks' counters."""
import os

import keras
import numpy as np

from cxr_fast.training import checkpointing


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_best_weights_saves_only_improvements_atomically(tmp_path):
    path = str(tmp_path / "best.weights.h5")
    callback = checkpointing.BestWeights(path, monitor="val_loss")
    model = _model()
    callback.set_model(model)
    open(tmp_path / ".best.partial.weights.h5", "w").write("left by a killed run")
    callback.on_epoch_end(0, {"val_loss": 1.0})
    assert os.listdir(tmp_path) == ["best.weights.h5"]
    first = os.path.getmtime(path)
    callback.on_epoch_end(1, {"val_loss": 2.0})  # worse: not saved
    assert os.path.getmtime(path) == first and callback.best == 1.0
    callback.on_epoch_end(2, {"val_loss": float("nan")})  # not finite: not saved
    assert os.path.getmtime(path) == first and callback.best == 1.0
    saved = _model()
    saved.load_weights(path)
    for mine, theirs in zip(model.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_callback_state_round_trip():
    model = _model()
    plateau = keras.callbacks.ReduceLROnPlateau(patience=3)
    stopping = keras.callbacks.EarlyStopping(patience=3)
    callbacks = [plateau, stopping]
    keras.callbacks.CallbackList(callbacks, model=model).on_train_begin()
    plateau.wait, plateau.best, stopping.wait, stopping.best = 2, np.float32(0.5), 1, 0.25
    state = checkpointing.callback_state(callbacks)
    fresh = [keras.callbacks.ReduceLROnPlateau(patience=3), keras.callbacks.EarlyStopping(patience=3)]
    keras.callbacks.CallbackList(fresh, model=model).on_train_begin()
    checkpointing.restore_callback_state(fresh, state)
    assert (fresh[0].wait, fresh[0].best, fresh[1].wait, fresh[1].best) == (2, 0.5, 1, 0.25)
