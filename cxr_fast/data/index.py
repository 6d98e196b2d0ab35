"""Finding the images of a chest X-ray folder, their patients, duplicates and splits.

Pure Python (no TensorFlow), so it is cheap to test and to run in worker processes.

Any layout works as long as each image sits somewhere below a folder named NORMAL or
PNEUMONIA (any case): the Kaggle zip (with its nested `chest_xray/chest_xray` copy and
`__MACOSX/` junk), the Mendeley download, or a flat two-folder layout.  A `train`, `val` or
`test` folder above the class folder gives the data set's own ("official") split.

Splits are functions of (file list, policy, fractions, seed) only: the file list is sorted
by relative path and every random draw comes from a `random.Random` seeded with a string,
so the same seed gives the same split on any machine and with any number of workers.
"""
import collections
import dataclasses
import os
import random
import re

from cxr_fast.config import SPLIT_POLICIES

CLASS_NAMES = ("NORMAL", "PNEUMONIA")  # index = integer label; PNEUMONIA = 1 as in the reference
SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm"})

# Kermany file names -> patient.  Numbers are parsed as int so "IM-0115" and "IM-115" agree.
# The newer `{CLASS}-{P}-{N}` names share one patient number space across classes, so all
# three prefixes map to the same patient: grouping too much is safe, too little leaks.
_PATIENT_PATTERNS = (
    (re.compile(r"^person(\d+)_(?:bacteria|virus)_\d+", re.I), "person{}"),
    (re.compile(r"^NORMAL2-IM-(\d+)-\d+", re.I), "NORMAL2-IM-{}"),
    (re.compile(r"^IM-(\d+)-\d+", re.I), "IM-{}"),
    (re.compile(r"^(?:NORMAL|BACTERIA|VIRUS|PNEUMONIA)-(\d+)-\d+", re.I), "P-{}"),
)
UNPARSED_PREFIX = "file:"


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """One candidate image: `path` is relative to the data folder, with '/' separators."""

    path: str
    label: int  # binary sets: the class; multi-label sets: 1 when any finding is positive
    patient: str
    official_split: str | None
    findings: tuple = ()  # multi-label sets: 1.0, 0.0 or -1.0 (ignored) per finding
    view: str = ""  # PA, AP, LATERAL, ... where the label file says


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file left out, with a reason `code: detail` that the manifest lists."""

    path: str
    reason: str


def parse_patient(filename):
    """Returns the patient id of a Kermany file name, or None when the name has no known form."""
    for pattern, template in _PATIENT_PATTERNS:
        match = pattern.match(filename)
        if match:
            return template.format(int(match.group(1)))
    return None


def patient_of(path):
    """The patient of a relative path; unparsable names become their own patient."""
    return parse_patient(os.path.basename(path)) or UNPARSED_PREFIX + path


def scan(data_dir):
    """Walks `data_dir` and returns (sorted candidate ImageFiles, sorted Skipped files)."""
    images, skipped = [], []
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        rel_root = os.path.relpath(root, data_dir)
        parts = [] if rel_root == "." else rel_root.split(os.sep)
        for name in sorted(files):
            rel = "/".join(parts + [name])
            reason = _junk_reason(parts, name)
            if reason:
                skipped.append(Skipped(rel, reason))
                continue
            label, official = _label_and_split(parts)
            if label is None:
                skipped.append(Skipped(rel, "outside_class_folder: not below a NORMAL or PNEUMONIA folder"))
            else:
                images.append(ImageFile(rel, label, patient_of(rel), official))
    return images, skipped


def _junk_reason(parts, name):
    if "__MACOSX" in parts or name.startswith("._"):
        return "macos_metadata: __MACOSX folder or ._ resource fork"
    if name.startswith(".") or any(p.startswith(".") for p in parts):
        return "hidden: hidden file or folder"
    if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
        return "not_an_image: extension is not one of " + " ".join(sorted(IMAGE_EXTENSIONS))
    return None


def _label_and_split(parts):
    """Label from the nearest NORMAL/PNEUMONIA folder, split from the nearest train/val/test above it."""
    upper = [p.upper() for p in parts]
    for i in range(len(upper) - 1, -1, -1):
        if upper[i] in CLASS_NAMES:
            official = next((p.lower() for p in reversed(parts[:i]) if p.lower() in SPLITS), None)
            return CLASS_NAMES.index(upper[i]), official
    return None, None


def dedupe(images, sha1s):
    """Keeps one file per content hash.

    Copies are ordered shallowest path first, so the Kaggle zip keeps `chest_xray/train/...`
    over `chest_xray/chest_xray/train/...`.  Identical content filed under both classes cannot
    be labeled, so every copy of it is skipped.  Returns (kept, duplicates, skipped) where
    duplicates is a list of (dropped path, kept path).
    """
    groups = collections.defaultdict(list)
    for image in images:
        groups[sha1s[image.path]].append(image)
    kept, duplicates, skipped = [], [], []
    for copies in groups.values():
        copies.sort(key=lambda im: (im.path.count("/"), im.path))
        if len({(im.label, im.findings) for im in copies}) > 1:
            others = ", ".join(im.path for im in copies)
            skipped += [Skipped(im.path, f"conflicting_labels: same content as {others}") for im in copies]
            continue
        kept.append(copies[0])
        duplicates += [(im.path, copies[0].path) for im in copies[1:]]
    kept.sort(key=lambda im: im.path)
    return kept, sorted(duplicates), sorted(skipped, key=lambda s: s.path)


def split(images, policy, fractions, seed):
    """Assigns each image a split; returns {path: split}.

    patient:  stratified by class, every patient in exactly one split, counts as close to the
              fractions as whole patients allow.
    image:    the reference's per-class random image split (a patient may land in two splits).
    official: the data set's own test folder; val carved by patient from its train (+val) folders.
    """
    if policy not in SPLIT_POLICIES:
        raise ValueError(f"unknown split policy {policy!r}; use one of {SPLIT_POLICIES}")
    if policy == "image":
        return _image_split(images, fractions, seed)
    if policy == "patient":
        return _patient_split(images, fractions, seed)
    test = [im for im in images if im.official_split == "test"]
    pool = [im for im in images if im.official_split in ("train", "val")]
    pool_fractions = (fractions[0] / (fractions[0] + fractions[1]), fractions[1] / (fractions[0] + fractions[1]), 0.0)
    assignment = _patient_split(pool, pool_fractions, seed)
    assignment.update({im.path: "test" for im in test})
    return assignment


def _image_split(images, fractions, seed):
    assignment = {}
    for label, members in sorted(_by_label(images).items()):
        paths = sorted(im.path for im in members)
        random.Random(f"{seed}/image/{label}").shuffle(paths)
        n_train = round(fractions[0] * len(paths))
        n_val = round(fractions[1] * len(paths))
        for i, path in enumerate(paths):
            assignment[path] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return assignment


def _patient_split(images, fractions, seed):
    """Greedy stratified group split: largest patients first, each to the split furthest below target."""
    by_patient = collections.defaultdict(list)
    for image in images:
        by_patient[image.patient].append(image)
    strata = collections.defaultdict(list)  # a patient's stratum is the label most of its images carry
    for patient, members in by_patient.items():
        labels = collections.Counter(im.label for im in members)
        strata[max(labels, key=lambda lab: (labels[lab], lab))].append(patient)
    assignment = {}
    for label, patients in sorted(strata.items()):
        patients.sort()
        random.Random(f"{seed}/patient/{label}").shuffle(patients)
        patients.sort(key=lambda p: -len(by_patient[p]))  # stable: random order within a size
        total = sum(len(by_patient[p]) for p in patients)
        targets = [f * total for f in fractions]
        counts = [0, 0, 0]
        open_splits = [i for i in range(3) if fractions[i] > 0]
        for patient in patients:
            best = max(open_splits, key=lambda i: (targets[i] - counts[i], -i))
            counts[best] += len(by_patient[patient])
            for image in by_patient[patient]:
                assignment[image.path] = SPLITS[best]
    return assignment


def _by_label(images):
    groups = collections.defaultdict(list)
    for image in images:
        groups[image.label].append(image)
    return groups


def patients_in_several_splits(images, assignment):
    """The patients whose images sit in more than one split (leakage between splits)."""
    seen = collections.defaultdict(set)
    for image in images:
        if image.path in assignment:
            seen[image.patient].add(assignment[image.path])
    return sorted(p for p, splits in seen.items() if len(splits) > 1)
