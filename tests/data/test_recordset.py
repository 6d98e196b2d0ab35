"""The record set's manifest and shards, checked without TensorFlow: what `--data_dir` and
`--batch_size` errors say, and that the entry points can check them before TensorFlow loads."""
import json
import os
import subprocess
import sys

import pytest

from cli import ROOT
from cxr_fast.data import recordset
from cxr_fast.errors import InputError


def test_load_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="manifest.json not found"):
        recordset.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        recordset.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(InputError, match="format_version 99"):
        recordset.load_manifest(str(tmp_path))


def test_missing_shard_is_named(copy_of):
    shard = sorted(f for f in os.listdir(copy_of) if f.startswith("val-"))[0]
    os.remove(os.path.join(copy_of, shard))
    with pytest.raises(InputError, match=f"{shard} is listed in manifest.json but missing"):
        recordset.open_record_set(copy_of)


def test_truncated_shard_is_named(copy_of):
    shard = os.path.join(copy_of, sorted(f for f in os.listdir(copy_of) if f.startswith("train-"))[0])
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[:-10])
    with pytest.raises(InputError, match=f"{os.path.basename(shard)} has .* bytes.*truncated"):
        recordset.open_record_set(copy_of)


def test_record_set_counts_and_batch_size_check(records_dir):
    record_set = recordset.open_record_set(records_dir)
    train = record_set.num_records("train")
    assert sum(record_set.records[path] for path in record_set.files["train"]) == train
    assert sum(record_set.class_counts("train")) == train
    record_set.check_batch_size(train)
    with pytest.raises(InputError, match=f"--batch_size={train + 1} is larger than the {train} training records"):
        record_set.check_batch_size(train + 1)


def test_checked_without_tensorflow(records_dir):
    code = ("import sys; from cxr_fast.data import recordset; "
            f"recordset.open_record_set({records_dir!r}, verify=True); assert 'tensorflow' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def _edit_manifest(folder, change):
    path = os.path.join(folder, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    change(manifest)
    with open(path, "w") as f:
        json.dump(manifest, f)


def test_a_manifest_whose_counts_were_edited_is_refused(copy_of):
    _edit_manifest(copy_of, lambda m: m["counts"]["train"].update(total=4300))
    with pytest.raises(InputError, match="train split holds 4300 records but its shards hold"):
        recordset.open_record_set(copy_of)


@pytest.mark.parametrize("change", [lambda m: m["counts"].pop("val"), lambda m: m["shards"][0].pop("records"),
                                    lambda m: m["shards"][0].update(records=-3)])
def test_a_manifest_missing_or_garbling_a_key_is_one_error(copy_of, change):
    _edit_manifest(copy_of, change)
    with pytest.raises(InputError, match="manifest.json"):
        recordset.open_record_set(copy_of)


def test_verify_counts_the_records_each_shard_really_holds(copy_of):
    def lie(manifest):  # one more record in a train shard and its split, consistently
        shard = next(s for s in manifest["shards"] if s["split"] == "train")
        shard["records"] += 1
        manifest["counts"]["train"]["total"] += 1

    _edit_manifest(copy_of, lie)
    recordset.open_record_set(copy_of)  # the cheap checks cannot see it
    with pytest.raises(InputError, match="holds .* records, manifest.json says"):
        recordset.open_record_set(copy_of, verify=True)
