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
