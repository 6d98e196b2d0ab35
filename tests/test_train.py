"""The training command line's bad flags, each one clear line (killed mid-epoch and resumed on 1, 2 and 4
replicas: tests/test_topology.py)."""

import os

import pytest

import hostile
from cli import assert_one_line_error, run

pytestmark = pytest.mark.heavy(20)  # ~seconds here; scheduled first (tests/conftest.py)

TINY = ["--backbone=tiny", "--image_size=32", "--weights=none", "--batch_size=16", "--epochs=2",
        "--steps_per_epoch=6", "--checkpoint_every_secs=0"]


def test_bad_flags_are_one_clear_line(records_dir, tmp_path):
    records = records_dir
    enum = run("cxr_fast.train", f"--data_dir={records}", f"--model_dir={tmp_path / 'a'}", "--backbone=B9")
    assert enum.returncode != 0 and "Traceback" not in enum.stderr and "--backbone" in enum.stderr
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={tmp_path / 'nothing'}", f"--model_dir={tmp_path / 'b'}",
                              *TINY), "manifest.json not found")
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={records}", f"--model_dir={tmp_path / 'c'}",
                              "--backbone=B0", "--image_size=32", f"--weights={tmp_path / 'absent.h5'}"),
                          "--weights", "no such file")
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={records}", f"--model_dir={tmp_path / 'd'}", *TINY,
                              "--batch_size=100000"), "--batch_size")
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={records}", f"--model_dir={tmp_path / 'e'}", *TINY,
                              "--head_dropout=half,0.2"), "--head_dropout=half,0.2", "must be numbers")


def test_export_dir_never_replaces_the_run_or_a_users_folder(records_dir, tmp_path):
    model_dir = tmp_path / "run"
    for export_dir, said in ((model_dir, "would replace the run"), (tmp_path, "would replace the run"),
                             (records_dir, "would replace the record set")):
        assert_one_line_error(run("cxr_fast.train", f"--data_dir={records_dir}", f"--model_dir={model_dir}", *TINY,
                                  f"--export_dir={export_dir}"), "--export_dir", said)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={records_dir}", f"--model_dir={model_dir}", *TINY,
                              f"--export_dir={mine}"), "--export_dir", "--overwrite")
    assert os.listdir(mine) == ["notes.txt"]


def test_train_shards_that_yield_fewer_records_than_counted_are_an_error_not_a_spin(copy_of, tmp_path):
    # default flags (cache auto: this small set is cached); each cache and emptying: tests/data/test_pipeline.py
    hostile.empty_train_shards(copy_of, "one")
    result = run("cxr_fast.train", f"--data_dir={copy_of}", f"--model_dir={tmp_path / 'run'}", *TINY, timeout=180)
    assert_one_line_error(result, "fewer records than manifest.json counts", "--verify_records")


@pytest.mark.parametrize("flag, said", [
    ("--learning_rate=nan", "--learning_rate=nan must be a finite number"),
    ("--min_learning_rate=inf", "--min_learning_rate=inf must be a finite number"),
    ("--reduce_lr_factor=nan", "--reduce_lr_factor=nan must be a finite number"),
    ("--reduce_lr_factor=1.5", "--reduce_lr_factor=1.5 must be in (0, 1)"),
    ("--checkpoint_every_secs=nan", "--checkpoint_every_secs=nan must be a finite number"),
    ("--seed=-1", "--seed=-1 must be in"),
    ("--image_size=100000", "--image_size=100000 must be in"),
])
def test_nonsense_numbers_are_one_line_errors(records_dir, tmp_path, flag, said):
    assert_one_line_error(run("cxr_fast.train", f"--data_dir={records_dir}", f"--model_dir={tmp_path / 'run'}", *TINY,
                              flag), said)


def test_a_diverging_loss_is_one_line_naming_the_flags(records_dir, tmp_path):
    result = run("cxr_fast.train", f"--data_dir={records_dir}", f"--model_dir={tmp_path / 'run'}", *TINY,
                 "--learning_rate=1e30")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(said) == 1 and "loss became NaN" in said[0] and "--learning_rate" in said[0], result.stderr[-2000:]
