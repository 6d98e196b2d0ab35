"""Finding images, patients, duplicates and the three split policies (pure Python)."""
import collections
import os

import pytest

from cxr_fast.data import index as di


@pytest.mark.parametrize("name,patient", [
    ("person1_bacteria_1.jpeg", "person1"),
    ("person1_virus_6.jpeg", "person1"),
    ("person1946_bacteria_4874.jpeg", "person1946"),
    ("IM-0115-0001.jpeg", "IM-115"),
    ("IM-0117-0001-0002.jpeg", "IM-117"),
    ("NORMAL2-IM-0381-0001.jpeg", "NORMAL2-IM-381"),
    ("NORMAL2-IM-1427-0001-0001.jpeg", "NORMAL2-IM-1427"),
    ("NORMAL-1003233-0001.jpeg", "P-1003233"),
    ("BACTERIA-1008087-0001.jpeg", "P-1008087"),
    ("VIRUS-1008087-0002.jpeg", "P-1008087"),
])
def test_parse_patient_kermany_names(name, patient):
    assert di.parse_patient(name) == patient


def test_unparsed_name_is_its_own_patient():
    assert di.parse_patient("scan.jpeg") is None
    assert di.patient_of("a/NORMAL/scan.jpeg") == "file:a/NORMAL/scan.jpeg"


def _touch(root, rel, data=b"x"):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_scan_finds_class_folders_at_any_depth_and_skips_junk(tmp_path):
    for rel in ["chest_xray/train/NORMAL/IM-0001-0001.jpeg", "chest_xray/test/pneumonia/person1_virus_1.jpeg",
                "flat/Normal/x.PNG", "__MACOSX/chest_xray/train/NORMAL/._IM-0001-0001.jpeg",
                "chest_xray/train/NORMAL/._IM-0002-0001.jpeg", "chest_xray/.DS_Store",
                "chest_xray/train/NORMAL/notes.txt", "other/img.jpeg", ".hidden/NORMAL/a.jpeg"]:
        _touch(tmp_path, rel)
    images, skipped = di.scan(str(tmp_path))
    assert [(im.path, im.label, im.official_split) for im in images] == [
        ("chest_xray/test/pneumonia/person1_virus_1.jpeg", 1, "test"),
        ("chest_xray/train/NORMAL/IM-0001-0001.jpeg", 0, "train"),
        ("flat/Normal/x.PNG", 0, None),
    ]
    reasons = {s.path: s.reason.split(":")[0] for s in skipped}
    assert reasons == {
        "__MACOSX/chest_xray/train/NORMAL/._IM-0001-0001.jpeg": "macos_metadata",
        "chest_xray/train/NORMAL/._IM-0002-0001.jpeg": "macos_metadata",
        "chest_xray/.DS_Store": "hidden",
        "chest_xray/train/NORMAL/notes.txt": "not_an_image",
        "other/img.jpeg": "outside_class_folder",
        ".hidden/NORMAL/a.jpeg": "hidden",
    }


def _image(path, label, patient=None, official=None):
    return di.ImageFile(path, label, patient or di.patient_of(path), official)


def test_dedupe_keeps_shallowest_copy_and_drops_conflicting_labels():
    images = [_image("chest_xray/chest_xray/train/NORMAL/a.jpeg", 0), _image("chest_xray/train/NORMAL/a.jpeg", 0),
              _image("x/NORMAL/b.jpeg", 0), _image("x/PNEUMONIA/b.jpeg", 1), _image("x/NORMAL/c.jpeg", 0)]
    sha1s = {images[0].path: "A", images[1].path: "A", images[2].path: "B", images[3].path: "B", images[4].path: "C"}
    kept, duplicates, skipped = di.dedupe(images, sha1s)
    assert [im.path for im in kept] == ["chest_xray/train/NORMAL/a.jpeg", "x/NORMAL/c.jpeg"]
    assert duplicates == [("chest_xray/chest_xray/train/NORMAL/a.jpeg", "chest_xray/train/NORMAL/a.jpeg")]
    assert sorted(s.path for s in skipped) == ["x/NORMAL/b.jpeg", "x/PNEUMONIA/b.jpeg"]
    assert all(s.reason.startswith("conflicting_labels") for s in skipped)


def _population(seed=0, patients=300):
    """Kermany-like: normal patients mostly 1 film, pneumonia patients 1-12 films."""
    import random

    rng = random.Random(seed)
    images = []
    for p in range(patients):
        label = int(rng.random() < 0.6)
        for n in range(rng.randint(1, 12) if label and rng.random() < 0.4 else 1):
            name = f"person{p}_bacteria_{n}.jpeg" if label else f"IM-{p:04d}-{n + 1:04d}.jpeg"
            folder = "test" if p % 7 == 0 else "train"
            images.append(_image(f"{folder}/{di.CLASS_NAMES[label]}/{name}", label, official=folder))
    return images


def _fractions(images, assignment):
    result = {}
    for label in (0, 1):
        members = [im for im in images if im.label == label]
        counts = collections.Counter(assignment[im.path] for im in members)
        result[label] = [counts[s] / len(members) for s in di.SPLITS]
    return result


def test_patient_split_keeps_patients_together_and_hits_fractions():
    images = _population()
    assignment = di.split(images, "patient", (0.6, 0.2, 0.2), seed=42)
    assert set(assignment) == {im.path for im in images}
    assert di.patients_in_several_splits(images, assignment) == []
    for label, fractions in _fractions(images, assignment).items():
        assert fractions == pytest.approx([0.6, 0.2, 0.2], abs=0.03), label


def test_split_is_deterministic_and_seed_dependent():
    images = _population()
    first = di.split(images, "patient", (0.6, 0.2, 0.2), seed=1)
    assert first == di.split(list(reversed(images)), "patient", (0.6, 0.2, 0.2), seed=1)
    assert first != di.split(images, "patient", (0.6, 0.2, 0.2), seed=2)


def test_image_split_is_per_class_exact_and_leaks_patients():
    images = _population()
    assignment = di.split(images, "image", (0.6, 0.2, 0.2), seed=42)
    for label, fractions in _fractions(images, assignment).items():
        assert fractions == pytest.approx([0.6, 0.2, 0.2], abs=0.01)
    assert di.patients_in_several_splits(images, assignment)  # why patient is the default


def test_official_split_keeps_test_folder_and_carves_val_by_patient():
    images = _population()
    assignment = di.split(images, "official", (0.6, 0.2, 0.2), seed=42)
    for im in images:
        assert (assignment[im.path] == "test") == (im.official_split == "test")
    train_pool = [im for im in images if im.official_split != "test"]
    val_share = sum(assignment[im.path] == "val" for im in train_pool) / len(train_pool)
    assert val_share == pytest.approx(0.25, abs=0.03)
    assert di.patients_in_several_splits(train_pool, assignment) == []


def test_zero_test_fraction_leaves_test_empty():
    images = _population()
    assignment = di.split(images, "patient", (0.8, 0.2, 0.0), seed=0)
    assert "test" not in assignment.values()
