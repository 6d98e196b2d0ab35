"""Label-file sets (NIH, CheXpert, MIMIC-CXR, RSNA, generic CSV): rows -> patients, labels, views and
splits, then records, on synthetic stand-ins laid out and labelled as each set is published."""
import collections
import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import LABEL_OPTIONS, convert, make_labelled
from cxr_fast.config import ConvertConfig
from cxr_fast.data import labelfiles, recordset, schema
from cxr_fast.errors import InputError

FORMATS = ("nih", "chexpert", "mimic", "rsna", "csv")


def _records(record_dir, num_findings):
    files = sorted(os.path.join(record_dir, f) for f in os.listdir(record_dir) if f.endswith(".tfrecord"))
    batch = next(iter(tf.data.TFRecordDataset(files).batch(1000)))
    return schema.parse_batch(batch, num_findings=num_findings)


@pytest.mark.parametrize("format", FORMATS)
def test_each_format_converts_with_patients_labels_and_reasons(labelled_records, format):
    labels, record_dir, manifest = labelled_records(format)
    multilabel = format != "rsna"
    assert manifest["task"] == ("multilabel" if multilabel else "binary")
    assert manifest["settings"]["format"] == format and manifest["settings"]["source"] == "label_file"
    assert manifest["patients"]["in_several_splits"] == 0 and manifest["patients"]["unparsed_names"] == 0
    assert all(manifest["counts"][split]["total"] > 0 for split in ("train", "val", "test"))
    reasons = manifest["skipped_by_reason"]
    assert reasons.get("missing_image", 0) + reasons.get("no_image", 0) >= 1  # the row naming nothing on disk
    parsed = _records(record_dir, len(manifest["findings"]))
    assert len(parsed[schema.LABEL]) == manifest["images_written"]
    patients = {p.decode().split(":")[0] for p in parsed[schema.PATIENT].numpy()}
    assert patients == {format}  # the patient comes from the label file, named by its set
    if multilabel:
        findings = parsed[schema.FINDINGS].numpy()
        assert findings.shape == (manifest["images_written"], len(manifest["findings"]))
        assert set(np.unique(findings)) <= {-1.0, 0.0, 1.0}
        # the any-finding label is what the patient split stratifies on
        np.testing.assert_array_equal(parsed[schema.LABEL].numpy(), (findings == 1).any(axis=1))
        totals = manifest["counts"]["train"]["findings"]
        assert sum(v["positive"] for v in totals.values()) > 0
    else:
        assert manifest["classes"] == list(labelfiles.RSNA_CLASSES)
        assert set(parsed[schema.LABEL].numpy()) == {0, 1}


def test_rsna_dicoms_decode_and_the_undecodable_one_is_a_named_skip(labelled_records):
    _, _, manifest = labelled_records("rsna")
    reasons = {s["reason"].split(":")[0]: s for s in manifest["skipped"]}
    assert "MPEG2" in reasons["unsupported"]["reason"]  # the syntax is named, the rest converted
    assert manifest["images_written"] == 15  # 16 films: one undecodable; the RLE-compressed one decoded


def test_nih_finding_labels_split_on_bars_and_no_finding_is_all_zero(tmp_path):
    labels = make_labelled(tmp_path / "nih", "nih", num_patients=6)
    rows = list(csv.DictReader(open(labels)))
    config = ConvertConfig(data_dir=str(tmp_path / "nih"), output_dir=str(tmp_path / "out"), labels=labels,
                           format="nih")
    classes, images, skipped, findings = labelfiles.read(config)
    assert findings == classes == labelfiles.NIH_FINDINGS
    by_name = {os.path.basename(im.path): im for im in images}
    for row in rows[:-1]:
        image = by_name[row["Image Index"]]
        named = set(row["Finding Labels"].split("|")) - {"No Finding"}
        assert {c for c, v in zip(classes, image.findings) if v == 1.0} == named
        assert image.patient == f"nih:{int(row['Patient ID'])}" and image.view == row["View Position"]
    assert [s.reason.split(":")[0] for s in skipped] == ["missing_image"]


@pytest.mark.parametrize("format", ["nih", "chexpert", "mimic"])
def test_official_split_follows_the_sets_own_lists(tmp_path, format):
    labels = make_labelled(tmp_path / "data", format, num_patients=15)
    manifest = convert(tmp_path / "data", tmp_path / "out", labels=labels, format=format, split="official")
    rows = list(csv.DictReader(open(tmp_path / "out" / recordset.SPLITS_CSV)))
    test_patients = {r["patient"] for r in rows if r["split"] == "test"}
    # the generators put every fifth patient (index 4, 9, 14) in the official test list
    assert len(test_patients) == 3 and manifest["counts"]["test"]["patients"] == 3
    assert {r["patient"] for r in rows if r["split"] != "test"}.isdisjoint(test_patients)


def test_uncertain_labels_ignored_or_mapped_and_recorded(tmp_path):
    labels = make_labelled(tmp_path / "data", "chexpert", num_patients=20)
    ignored = convert(tmp_path / "data", tmp_path / "ignore", labels=labels, format="chexpert")
    ones = convert(tmp_path / "data", tmp_path / "ones", labels=labels, format="chexpert", uncertain="ones")

    def totals(manifest, kind):
        return sum(f[kind] for split in ("train", "val", "test") for f in manifest["counts"][split]["findings"].values())

    assert totals(ignored, "ignored") > 0 and totals(ones, "ignored") == 0
    assert totals(ones, "positive") == totals(ignored, "positive") + totals(ignored, "ignored")
    assert ignored["settings"]["uncertain"] == "ignore" and ones["settings"]["uncertain"] == "ones"
    assert labelfiles.label_value("", "ignore") == 0.0  # blank: negative, as CheXpert's paper
    assert labelfiles.label_value("-1.0", "zeros") == 0.0 and labelfiles.label_value("-1", "ones") == 1.0
    assert labelfiles.label_value("-1", "ignore") == labelfiles.IGNORED


def test_rsna_views_come_from_the_dicom_headers(tmp_path):
    labels = make_labelled(tmp_path / "data", "rsna", num_patients=12)
    config = ConvertConfig(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), labels=labels,
                           format="rsna", views=("PA",))
    _, images, skipped, _ = labelfiles.read(config)
    assert {im.view for im in images} == {"PA"} and len(images) == 8  # patients 0, 3, 6, 9 stood AP
    assert sum(s.reason.startswith("view: AP") for s in skipped) == 4


def test_view_filter_keeps_frontal_films(tmp_path):
    labels = make_labelled(tmp_path / "data", "mimic", num_patients=12)
    every = convert(tmp_path / "data", tmp_path / "all", labels=labels, format="mimic")
    frontal = convert(tmp_path / "data", tmp_path / "pa", labels=labels, format="mimic", views=("PA", "AP"))
    lateral = every["images_written"] - frontal["images_written"]
    assert lateral > 0 and frontal["skipped_by_reason"]["view"] == lateral


def test_bad_label_settings_name_the_flag(tmp_path):
    labels = make_labelled(tmp_path / "data", "csv", num_patients=4)
    base = dict(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"))
    with pytest.raises(InputError, match="--format"):
        ConvertConfig(**base, labels=labels).validate()
    with pytest.raises(InputError, match="--labels=.*no such file"):
        ConvertConfig(**base, labels=str(tmp_path / "absent.csv"), format="nih").validate()
    with pytest.raises(InputError, match="--path_column"):
        ConvertConfig(**base, labels=labels, format="csv").validate()
    with pytest.raises(InputError, match="--view_column"):
        ConvertConfig(**base, labels=labels, format="csv", views=("PA",),
                      **{**LABEL_OPTIONS["csv"], "view_column": ""}).validate()
    with pytest.raises(InputError, match="--split=official"):
        ConvertConfig(**base, labels=labels, format="csv", split="official", **LABEL_OPTIONS["csv"]).validate()
    with pytest.raises(InputError, match="no column 'Image Index'"):  # a CSV of another format
        convert(tmp_path / "data", tmp_path / "out", labels=labels, format="nih")
    with pytest.raises(InputError, match="need --labels"):
        ConvertConfig(**base, format="nih").validate()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no row names an image found below --data_dir"):
        convert(tmp_path / "empty", tmp_path / "out2", labels=labels, format="csv", **LABEL_OPTIONS["csv"])
    assert not (tmp_path / "out2").exists()  # nothing half-written


def test_generic_csv_with_one_label_column_is_a_binary_set(tmp_path):
    labels = make_labelled(tmp_path / "data", "csv", num_patients=16)
    manifest = convert(tmp_path / "data", tmp_path / "out", labels=labels, format="csv", path_column="file",
                       patient_column="patient", label_columns=("opacity",))
    assert manifest["task"] == "binary" and manifest["classes"] == ["NO_OPACITY", "OPACITY"]
    assert collections.Counter(manifest["skipped_by_reason"]) == {"no_image": 1, "unreadable": 1}


def test_a_cell_that_is_not_a_label_skips_its_row_with_the_reason(tmp_path):
    labels = make_labelled(tmp_path / "data", "csv", num_patients=8)
    rows = list(csv.reader(open(labels)))
    rows.append([rows[1][0], "P7777", "PA", "maybe", "0", "0"])  # an existing film, a bad cell
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    config = ConvertConfig(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), labels=labels,
                           format="csv", **LABEL_OPTIONS["csv"])
    _, images, skipped, _ = labelfiles.read(config)
    bad = [s for s in skipped if s.reason.startswith("bad_label")]
    assert len(bad) == 1 and "'maybe'" in bad[0].reason and bad[0].path == rows[1][0]
    assert not any(im.patient == "csv:P7777" for im in images)


def test_rows_whose_paths_lead_outside_data_dir_are_skipped(tmp_path):
    labels = make_labelled(tmp_path / "data", "csv", num_patients=8)
    rows = list(csv.reader(open(labels)))
    film = os.path.join(str(tmp_path / "data"), rows[1][0])
    outside = tmp_path / "elsewhere.png"  # a real film outside --data_dir
    outside.write_bytes(open(film, "rb").read())
    for path in (str(outside), "../elsewhere.png", "images/../../elsewhere.png", "/etc/passwd"):
        rows.append([path, f"P{len(rows)}", "PA", "1", "0", "0"])
    inside = f"films/../{rows[1][0]}"  # `..` that stays inside: kept
    rows.append([inside, "P9999", "PA", "1", "0", "0"])
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    config = ConvertConfig(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), labels=labels,
                           format="csv", **LABEL_OPTIONS["csv"])
    _, images, skipped, _ = labelfiles.read(config)
    outside_rows = sorted(s.path for s in skipped if s.reason.startswith("outside_data_dir"))
    assert outside_rows == sorted([str(outside), "../elsewhere.png", "images/../../elsewhere.png", "/etc/passwd"])
    assert not any("elsewhere" in im.path or im.path == "/etc/passwd" for im in images)
    assert any(im.path == inside for im in images)


@pytest.mark.parametrize("content, said", [
    (b"file,patient,view,opacity\n\xff\xfe\x00bad,P1,PA,1\n", "is not UTF-8 text"),
    (b"file,patient,view,opacity\n" + b"x" * (200 * 1024) + b",P1,PA,1\n", "is not a readable CSV file"),
])
def test_a_label_file_that_is_not_utf8_csv_is_one_error(tmp_path, content, said):
    (tmp_path / "data").mkdir()
    labels = tmp_path / "data" / "labels.csv"
    labels.write_bytes(content)
    config = ConvertConfig(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), labels=str(labels),
                           format="csv", path_column="file", patient_column="patient", label_columns=("opacity",))
    with pytest.raises(InputError, match=said):
        labelfiles.read(config)


@pytest.mark.parametrize("format, column, values", [
    ("nih", "Patient ID", ["abc", "", "-3"]),
    ("rsna", "Target", ["2", "nan", "yes", ""]),
])
def test_a_bad_patient_or_target_cell_skips_its_row_with_the_reason(tmp_path, format, column, values):
    labels = make_labelled(tmp_path / "data", format, num_patients=8)
    with open(labels, newline="") as f:
        header, *rows = list(csv.reader(f))
    at, key = header.index(column), header.index("Image Index" if format == "nih" else "patientId")
    bad = []
    for value in values:
        row = list(rows[len(bad)])
        row[at] = value
        rows[len(bad)] = row
        bad.append(row[key])
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    config = ConvertConfig(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), labels=labels,
                           format=format, **LABEL_OPTIONS.get(format, {}))
    _, images, skipped, _ = labelfiles.read(config)
    reasons = [s for s in skipped if s.reason.startswith(("no_patient", "bad_label"))]
    assert len(reasons) == len(values) and all(any(b in s.path for b in bad) for s in reasons), reasons
    assert all(column in s.reason for s in reasons)
    assert images  # the other rows still convert
