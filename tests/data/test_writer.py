"""The converter: round trip, split guarantees, duplicates, bad input, determinism, split modes."""
import collections
import csv
import hashlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import convert, make_synthetic
from cxr_fast.data import recordset, schema, writer
from cxr_fast.errors import InputError


def _read_split(record_dir, split):
    manifest = recordset.load_manifest(record_dir)
    files = sorted(tf.io.gfile.glob(os.path.join(record_dir, schema.shard_pattern(split))))
    rows = []
    for batch in tf.data.TFRecordDataset(files).batch(64):
        features = schema.parse_batch(batch)
        image = manifest["image"]
        images = schema.decode_images(features[schema.ENCODED], image["encoding"], image["height"], image["width"])
        for i in range(len(images)):
            rows.append({"image": images[i].numpy(), "label": int(features[schema.LABEL][i]),
                         "file": features[schema.FILENAME][i].numpy().decode(),
                         "patient": features[schema.PATIENT][i].numpy().decode(),
                         "sha1": features[schema.SOURCE_SHA1][i].numpy().decode(),
                         "class": features[schema.CLASS_TEXT][i].numpy().decode()})
    return rows


def _splits_csv(record_dir):
    with open(os.path.join(record_dir, recordset.SPLITS_CSV)) as f:
        return list(csv.DictReader(f))


def test_round_trip_matches_manifest_and_sources(records_dir, synthetic_dir):
    manifest = recordset.load_manifest(records_dir)
    csv_rows = {r["file"]: r for r in _splits_csv(records_dir)}
    for split in ("train", "val", "test"):
        rows = _read_split(records_dir, split)
        counts = collections.Counter(r["class"] for r in rows)
        assert counts["NORMAL"] == manifest["counts"][split]["NORMAL"]
        assert counts["PNEUMONIA"] == manifest["counts"][split]["PNEUMONIA"]
        assert len({r["patient"] for r in rows}) == manifest["counts"][split]["patients"]
        for r in rows[:20]:
            assert r["image"].shape == (32, 32, 1)
            assert r["label"] == (r["class"] == "PNEUMONIA")
            assert r["label"] == ("/PNEUMONIA/" in r["file"])
            source = open(os.path.join(synthetic_dir, r["file"]), "rb").read()
            assert r["sha1"] == hashlib.sha1(source).hexdigest() == csv_rows[r["file"]]["sha1"]
            assert csv_rows[r["file"]]["split"] == split and csv_rows[r["file"]]["patient"] == r["patient"]
    assert manifest["images_written"] == len(csv_rows)
    for shard in manifest["shards"]:
        path = os.path.join(records_dir, shard["file"])
        assert recordset.sha256_file(path) == shard["sha256"]
        assert sum(1 for _ in tf.data.TFRecordDataset(path)) == shard["records"]
    assert not [f for f in os.listdir(records_dir) if f.startswith(".") or f.endswith(".tmp")]


def test_pixels_match_the_shared_loader(records_dir, synthetic_dir):
    from cxr_fast.data import imaging

    row = _read_split(records_dir, "val")[0]
    expected = imaging.load_gray(open(os.path.join(synthetic_dir, row["file"]), "rb").read(), 32)
    assert np.abs(row["image"][..., 0].astype(int) - expected.astype(int)).mean() < 1.5  # JPEG q95 loss only


def test_patient_split_has_no_leak_and_close_fractions(records_dir):
    manifest = recordset.load_manifest(records_dir)
    rows = _splits_csv(records_dir)
    splits_of = collections.defaultdict(set)
    for r in rows:
        splits_of[r["patient"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert manifest["patients"]["in_several_splits"] == 0
    total = len(rows)
    for split, fraction in zip(("train", "val", "test"), (0.6, 0.2, 0.2)):
        assert manifest["counts"][split]["total"] / total == pytest.approx(fraction, abs=0.06)


def test_kaggle_duplicates_and_junk_are_removed_and_counted(records_dir, synthetic_dir):
    manifest = recordset.load_manifest(records_dir)
    assert manifest["duplicates_removed"] == manifest["images_written"]  # the nested copy, every image
    assert all(d["file"].startswith("chest_xray/chest_xray/") for d in manifest["duplicates"])
    assert manifest["skipped_by_reason"]["macos_metadata"] > 0
    assert len(manifest["skipped"]) == manifest["skipped_count"]


def test_several_shards_per_split_with_small_target(records_dir):
    manifest = recordset.load_manifest(records_dir)
    train = [s for s in manifest["shards"] if s["split"] == "train"]
    assert len(train) > 1
    assert [s["file"] for s in train] == [schema.shard_name("train", i, len(train)) for i in range(len(train))]


def test_deterministic_across_runs_and_worker_counts(synthetic_dir, records_dir, tmp_path):
    again = convert(synthetic_dir, tmp_path / "again", shard_size_mb=0.004, num_workers=2)
    first = recordset.load_manifest(records_dir)
    assert [(s["file"], s["sha256"]) for s in again["shards"]] == [(s["file"], s["sha256"]) for s in first["shards"]]
    assert open(tmp_path / "again" / "splits.csv").read() == open(os.path.join(records_dir, "splits.csv")).read()


def test_min_shards_gives_equal_record_counts(synthetic_dir, tmp_path):
    """One shard per split by size, but --min_shards=4: four shards of (nearly) equal counts."""
    manifest = convert(synthetic_dir, tmp_path / "four", min_shards=4)
    for split in ("train", "val", "test"):
        counts = [s["records"] for s in manifest["shards"] if s["split"] == split]
        assert len(counts) == 4 and sum(counts) == manifest["counts"][split]["total"]
        assert max(counts) - min(counts) <= 3  # ceil-sized shards, the last one takes the rest


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("plain") / "data", num_patients=40, seed=2)


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_other_encodings(plain_dir, tmp_path, encoding):
    manifest = convert(plain_dir, tmp_path / encoding, encoding=encoding, image_size=16)
    rows = _read_split(str(tmp_path / encoding), "train")
    assert len(rows) == manifest["counts"]["train"]["total"]
    assert rows[0]["image"].shape == (16, 16, 1)


def test_image_split_reports_leaking_patients(plain_dir, tmp_path):
    manifest = convert(plain_dir, tmp_path / "image", split="image")
    assert manifest["patients"]["in_several_splits"] > 0
    assert manifest["settings"]["split"] == "image"


def test_official_split_keeps_the_test_folder(plain_dir, tmp_path):
    convert(plain_dir, tmp_path / "official", split="official")
    rows = _splits_csv(str(tmp_path / "official"))
    for r in rows:
        assert (r["split"] == "test") == ("/test/" in r["file"])
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_bad_files_are_skipped_with_reasons(plain_dir, tmp_path):
    data = tmp_path / "data"
    import shutil

    shutil.copytree(plain_dir, data)
    good = open(next(os.path.join(r, f) for r, _, fs in os.walk(data) for f in fs if f.endswith(".jpeg")), "rb").read()
    _write(data / "chest_xray/train/NORMAL/IM-9001-0001.jpeg", b"")
    _write(data / "chest_xray/train/NORMAL/IM-9002-0001.jpeg", good[: len(good) // 2])
    _write(data / "chest_xray/train/NORMAL/IM-9003-0001.jpeg", b"<html>not an image</html>")
    big = io.BytesIO()
    Image.new("L", (400, 400)).save(big, format="PNG")
    _write(data / "chest_xray/train/PNEUMONIA/person9004_virus_1.png", big.getvalue())
    manifest = convert(data, tmp_path / "out", max_image_pixels=100_000)
    reasons = {s["file"].split("/")[-1]: s["reason"].split(":")[0] for s in manifest["skipped"]}
    assert reasons["IM-9001-0001.jpeg"] == "unreadable"
    assert reasons["IM-9002-0001.jpeg"] == "truncated"
    assert reasons["IM-9003-0001.jpeg"] == "unreadable"
    assert reasons["person9004_virus_1.png"] == "too_large"
    written = {r["file"] for r in _splits_csv(str(tmp_path / "out"))}
    assert not any("900" in f.split("/")[-1][:8] for f in written)


@pytest.mark.parametrize("setup,message", [
    ("missing", "is not a folder"),
    ("empty", "holds no files"),
    ("no_classes", "no image file below a folder named NORMAL or PNEUMONIA"),
    ("one_class", "no readable PNEUMONIA image"),
])
def test_bad_data_dir_is_one_clear_error(tmp_path, setup, message):
    data = tmp_path / "data"
    if setup != "missing":
        data.mkdir()
    if setup == "no_classes":
        _write(data / "images/a.jpeg", b"x")
    if setup == "one_class":
        buffer = io.BytesIO()
        Image.new("L", (20, 20)).save(buffer, format="JPEG")
        _write(data / "NORMAL/IM-0001-0001.jpeg", buffer.getvalue())
        _write(data / "PNEUMONIA/person1_virus_1.jpeg", b"")
    with pytest.raises(InputError, match=message):
        convert(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(plain_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="--overwrite"):
        convert(plain_dir, out)
    assert os.listdir(out) == ["keep.txt"]
    convert(plain_dir, out, overwrite=True)
    assert "manifest.json" in os.listdir(out) and "keep.txt" not in os.listdir(out)


def test_too_small_for_fractions(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (20, 20)).save(buffer, format="JPEG")
    for rel in ["NORMAL/IM-0001-0001.jpeg", "PNEUMONIA/person1_virus_1.jpeg"]:
        data = buffer.getvalue() + rel.encode()  # distinct content, no duplicates
        _write(tmp_path / "data" / rel, data)
    with pytest.raises(InputError, match="received no image"):
        convert(tmp_path / "data", tmp_path / "out")


@pytest.mark.parametrize("field,value,flag", [
    ("split", "random", "--split"), ("split_fractions", (0.5, 0.5, 0.5), "--split_fractions"),
    ("encoding", "webp", "--encoding"), ("image_size", 3, "--image_size"), ("shard_size_mb", 0, "--shard_size_mb"),
    ("min_shards", 0, "--min_shards"),
])
def test_bad_settings_name_the_flag(plain_dir, tmp_path, field, value, flag):
    with pytest.raises(InputError, match=flag):
        convert(plain_dir, tmp_path / "out", **{field: value})


def test_manifest_is_json_with_settings(records_dir):
    manifest = json.load(open(os.path.join(records_dir, "manifest.json")))
    assert manifest["settings"]["image_size"] == 32 and manifest["image"]["encoding"] == "jpeg"
    assert manifest["timing"]["convert_images_per_second"] > 0
    assert "written" in writer.summary_table(manifest)
