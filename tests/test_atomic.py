"""Outputs appear complete under their final name, or not at all."""
import os
import stat

import pytest

from cxr_fast import atomic
from cxr_fast.errors import InputError


def test_write_bytes_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic.write_json(str(path), {"a": 1})
    atomic.write_json(str(path), {"a": 2})
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"a":2}'
    assert os.listdir(path.parent) == ["out.json"]
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others, unlike mkstemp's 0600


def test_staged_dir_failure_leaves_nothing(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic.staged_dir(str(final)) as staging:
            open(os.path.join(staging, "half.tfrecord"), "w").close()
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_staged_dir_refuses_then_overwrites(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(InputError, match="--output_dir=.*not empty.*--overwrite"):
        with atomic.staged_dir(str(final)):
            pass
    with atomic.staged_dir(str(final), overwrite=True) as staging:
        open(os.path.join(staging, "new.txt"), "w").close()
    assert os.listdir(final) == ["new.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_staged_dir_into_existing_empty_folder(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    with atomic.staged_dir(str(final)) as staging:
        open(os.path.join(staging, "a"), "w").close()
    assert os.listdir(final) == ["a"]


def test_an_output_folder_never_replaces_the_runs_inputs(tmp_path):
    images = tmp_path / "project" / "images"
    images.mkdir(parents=True)
    (images / "film.png").write_bytes(b"x")
    for output in (tmp_path / "project", images, tmp_path):  # the inputs' folder and every ancestor of it
        with pytest.raises(InputError, match="would replace the images"):
            atomic.check_output_dir(str(output), True, inputs=[(str(images), "the images")])
    atomic.check_output_dir(str(tmp_path / "records"), True, inputs=[(str(images), "the images")])
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "project")  # the same folder by another name
    with pytest.raises(InputError, match="would replace"):
        atomic.check_output_dir(str(link), True, inputs=[(str(images), "the images")])


def test_only_the_same_commands_earlier_output_is_replaced_without_overwrite(tmp_path):
    final = tmp_path / "eval_test"
    with atomic.staged_dir(str(final), command="evaluate") as staging:
        open(os.path.join(staging, "report.md"), "w").close()
    assert atomic.made_by(str(final)) == "evaluate"
    with atomic.staged_dir(str(final), command="evaluate") as staging:  # a second evaluation refreshes it
        open(os.path.join(staging, "metrics.json"), "w").close()
    assert sorted(os.listdir(final)) == [atomic.MARKER, "metrics.json"]
    with pytest.raises(InputError, match="--overwrite"):  # another command's output is not its own
        atomic.check_output_dir(str(final), False, command="train")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    with pytest.raises(InputError, match="--overwrite"):
        atomic.check_output_dir(str(tmp_path / "mine"), False, command="evaluate")


def test_staging_folders_of_dead_runs_are_removed(tmp_path):
    dead = tmp_path / ".out.partial-999999999-abc"  # no such process
    dead.mkdir()
    alive = tmp_path / f".out.partial-{os.getpid()}-def"  # a run still going: kept
    alive.mkdir()
    other = tmp_path / ".other.partial-999999999-x"  # another output's: not this one's to remove
    other.mkdir()
    with atomic.staged_dir(str(tmp_path / "out")) as staging:
        open(os.path.join(staging, "a"), "w").close()
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, other.name, "out"])
