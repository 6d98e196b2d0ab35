"""Short real training runs on the synthetic set with default flags (the reference augmentation,
precise BatchNorm statistics, Keras' momentum): they learn, leave every output behind, and
without precise statistics the evaluation model lags and the log says so."""
import json
import os

import keras
import numpy as np
import pytest

from conftest import convert, make_synthetic
from cxr_fast.config import DataConfig, ModelConfig, TrainConfig
from cxr_fast.training import loop

pytestmark = pytest.mark.heavy(40)  # ~seconds here; scheduled first (tests/conftest.py)


def tiny_config(records, model_dir, **overrides):
    """Defaults but for size: the tiny CNN at 32 px from scratch, 5 epochs of 20 steps of 32."""
    settings = dict(model_dir=str(model_dir), data=DataConfig(data_dir=records, image_size=32, global_batch_size=32),
                    model=ModelConfig(backbone="tiny", image_size=32, weights="none"), epochs=5, steps_per_epoch=20)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def easy_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("easy")
    images = make_synthetic(root / "images", num_patients=160, seed=1, difficulty=0.0)
    convert(images, root / "records", image_size=32)
    return str(root / "records")


def _train(records, model_dir, **overrides):
    lines = []
    summary = loop.train_and_evaluate(tiny_config(records, model_dir, **overrides), log=lines.append)
    return model_dir, summary, lines


@pytest.fixture(scope="module")
def trained(easy_records, tmp_path_factory):
    return _train(easy_records, tmp_path_factory.mktemp("run") / "model")


@pytest.fixture(scope="module")
def without_precise_statistics(easy_records, tmp_path_factory):
    return _train(easy_records, tmp_path_factory.mktemp("lagging") / "model", precise_bn_batches=0)


def test_learns_the_synthetic_sign(trained):
    model_dir, summary, lines = trained
    history = json.load(open(model_dir / "history.json"))
    assert len(history) == 5 and summary["epochs_trained"] == 5
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.05  # the loss falls, through the augmentation
    # From scratch, 100 steps, default flags: held-out AUC well above chance (seen: val 0.97, test 0.89).
    assert max(h["val_auc"] for h in history) > 0.9 and summary["test"]["auc"] > 0.8
    assert not any("nearly constant" in line for line in lines)
    assert any("augmentation ramps" in line and "1.25 epochs (25 steps" in line for line in lines)  # auto, scratch


def test_gated_ramp_starts_after_the_first_epoch_that_reaches_the_gate(trained):
    assert loop.ramp_start_epoch([], 0.7) is None
    history = [{"epoch": 1, "val_auc": 0.55}, {"epoch": 2, "val_auc": None}, {"epoch": 3, "val_auc": 0.71},
               {"epoch": 4, "val_auc": 0.5}]
    assert loop.ramp_start_epoch(history, 0.7) == 3 and loop.ramp_start_epoch(history, 0.8) is None
    # The default run from scratch: flips only until the gate, then the strength rises to 1.
    model_dir, _, lines = trained
    history = json.load(open(model_dir / "history.json"))
    start = loop.ramp_start_epoch(history, 0.7)
    assert start is not None and any("ranges ramp to full" in line for line in lines)
    strengths = [h["augment_strength"] for h in history]
    assert strengths[:start] == [0.0] * start and strengths[-1] == 1.0
    assert strengths == sorted(strengths)


def test_precise_statistics_are_what_make_the_evaluation_model_work(trained, without_precise_statistics):
    # The same run (same weights at every step: statistics never feed training) with Keras' moving
    # averages: its evaluation model lags, and the log says what to do.
    model_dir, summary, _ = trained
    lagging_dir, lagging, lines = without_precise_statistics
    losses = [[h["loss"] for h in json.load(open(d / "history.json"))] for d in (model_dir, lagging_dir)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)  # training identical: only the statistics differ...
    assert summary["test"]["auc"] > lagging["test"]["auc"] + 0.1  # ...and they decide the score
    assert any("validation predictions are nearly constant" in line and "--precise_bn_batches" in line
               for line in lines)


def test_outputs_are_complete(trained):
    model_dir, summary, lines = trained
    for name in ("config.json", "history.json", "history.csv", "best.weights.h5", "model.keras", "summary.json",
                 "checkpoints/state.json"):
        assert os.path.isfile(model_dir / name), name
    assert any(f.startswith("events") for f in os.listdir(model_dir / "tensorboard"))
    assert not [f for f in os.listdir(model_dir) if f.startswith(".partial")]
    assert summary["test"]["count"] > 0 and 0 <= summary["test"]["accuracy"] <= 1
    assert json.load(open(model_dir / "summary.json"))["best_epoch"] == summary["best_epoch"]
    assert any("img/s" in line and "input wait" in line for line in lines)
    assert any("tiny CNN" in line and "trainable" in line for line in lines)
    model = keras.models.load_model(model_dir / "model.keras")
    assert model.predict(np.zeros((2, 32, 32, 1), np.uint8), verbose=0).shape == (2, 1)
    header = open(model_dir / "history.csv").readline().strip().split(",")
    assert header[:3] == ["epoch", "loss", "accuracy"] and "learning_rate" in header


def test_finished_run_is_not_trained_again(trained, easy_records):
    model_dir, summary, _ = trained
    lines = []
    again = loop.train_and_evaluate(tiny_config(easy_records, model_dir), log=lines.append)
    assert again == summary and any("finished run" in line for line in lines)


def test_foreign_model_dir_is_refused(easy_records, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    from cxr_fast.errors import InputError

    with pytest.raises(InputError, match="no cxr_fast checkpoint"):
        loop.train_and_evaluate(tiny_config(easy_records, tmp_path))


class _Workers:
    """Stands in for `Steps.gather` across two workers that hold the given rows."""

    def __init__(self, *rows):
        self.rows = np.array(rows, np.float64)

    def gather(self, values):
        return self.rows


def test_workers_resuming_from_different_steps_is_a_cluster_error():
    import tensorflow as tf

    from cxr_fast.errors import ClusterError

    position = {"global_step": tf.Variable(12, dtype=tf.int64)}
    loop._check_same_start(_Workers([12.0], [12.0]), position, "runs/x")  # agreeing workers pass
    with pytest.raises(ClusterError, match=r"resume from different steps \(\[0, 12\]\): --model_dir=runs/x"):
        loop._check_same_start(_Workers([12.0], [0.0]), position, "runs/x")


def test_epoch_logs_are_averaged_over_workers():
    logs = {"val_loss": 0.5, "val_auc": None, "seconds": 10.0}
    agreed = loop._agreed(_Workers([0.5, 10.0], [0.5000001, 12.0]), logs)
    assert agreed["val_auc"] is None and agreed["seconds"] == 11.0
    assert agreed["val_loss"] == pytest.approx(0.50000005)


def test_the_chiefs_clock_decides_mid_epoch_checkpoints():
    # worker rows: [chief due?], [this worker due?]; saving is collective, so all follow the chief
    assert loop._checkpoint_due(_Workers([1.0], [0.0]), 2, seconds_since=0.0, every_secs=600) is True
    assert loop._checkpoint_due(_Workers([0.0], [1.0]), 2, seconds_since=900.0, every_secs=600) is False
    assert loop._checkpoint_due(None, 1, seconds_since=900.0, every_secs=600) is True


def test_constant_validation_predictions_are_called_out():
    note = loop.constant_predictions_note(0.002, accuracy=0.95, val_accuracy=0.33, precise_batches=8)
    assert "nearly constant (std 0.0020)" in note and "training accuracy is 0.950" in note
    assert "--precise_bn_batches" in note and "recomputed on 8 batches" in note
    assert "--bn_momentum" in loop.constant_predictions_note(0.002, 0.95, 0.33, precise_batches=0)
    assert loop.constant_predictions_note(0.2, 0.95, 0.33, 8) is None  # predictions vary
    assert loop.constant_predictions_note(0.002, 0.40, 0.33, 8) is None  # not learning yet either
