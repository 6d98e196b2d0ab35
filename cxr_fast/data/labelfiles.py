"""The public chest X-ray sets' label files -> one ImageFile per image: path, patient, labels, view, split.

Pure Python (csv), no TensorFlow.  Patients always come from the label file or the set's own
path layout, never from guessed file names.  Formats, as published:

    nih       Data_Entry_2017.csv: Image Index, Finding Labels ("Effusion|Infiltration" or
              "No Finding"), Follow-up #, Patient ID, ..., View Position.  Images are found by
              name anywhere below --data_dir (images_001/images/...).  Official split:
              train_val_list.txt / test_list.txt beside the label file.
    chexpert  train.csv (and valid.csv beside it): Path ("CheXpert-v1.0-small/train/patient00001/
              study1/view1_frontal.jpg"), Sex, Age, Frontal/Lateral, AP/PA and 14 observations.
              Official split: valid.csv is the test split (the competition's test set is hidden).
    mimic     mimic-cxr-2.0.0-chexpert.csv (subject_id, study_id, the 14 observations), with
              mimic-cxr-2.0.0-metadata.csv (dicom_id, subject_id, study_id, ViewPosition) and
              mimic-cxr-2.0.0-split.csv (dicom_id, ..., split) beside it; one image per dicom_id
              at files/p10/p10000032/s50414267/{dicom_id}.jpg.
    rsna      stage_2_train_labels.csv: patientId, x, y, width, height, Target, a row per box; one
              image per patientId (positive when any row is), stage_2_train_images/{id}.dcm.  RSNA's
              patientId names one film, so it is the patient here too.  No official split; the
              view (for --view) is read from each DICOM's header.
    csv       any CSV: --path_column (relative to --data_dir), --patient_column, --label_columns.

Label values follow CheXpert: 1 positive, 0 or blank negative, -1 uncertain, mapped by
`uncertain` (CheXpert's U-Ignore, U-Ones, U-Zeros).  An ignored label is stored as -1 and
masked out of the loss and the metrics.  A set with one label column is a binary set (the
reference's head, as Kermany); with several, a multi-label set (one sigmoid per finding).
"""
import collections
import csv
import os
import re

from cxr_fast.data import dicom
from cxr_fast.data.index import ImageFile, Skipped
from cxr_fast.errors import InputError

IGNORED = -1.0  # a label left out of the loss and the metrics

NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
CHEXPERT_FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                     "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                     "Pleural Other", "Fracture", "Support Devices")
RSNA_CLASSES = ("NO_PNEUMONIA", "PNEUMONIA")
MIMIC_FILES = {"metadata": "mimic-cxr-2.0.0-metadata.csv", "split": "mimic-cxr-2.0.0-split.csv"}


def _rows(path):
    if not os.path.isfile(path):
        raise InputError(f"{path} not found: --labels must name the set's label file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            return reader.fieldnames or [], list(reader)
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text (byte {err.start}); save the label file as UTF-8 CSV") from None
    except csv.Error as err:  # a field over csv's size limit, a NUL byte, a broken quote
        raise InputError(f"{path} is not a readable CSV file ({err}); is --labels the set's label file?") from None


def _require(path, columns, needed):
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InputError(f"{path} has no column {', '.join(repr(c) for c in missing)}; is --format right? "
                         f"(its columns: {', '.join(columns[:8])}{' ...' if len(columns) > 8 else ''})")


def label_value(text, uncertain):
    """One cell -> 1.0, 0.0 or IGNORED; blank is negative, -1 uncertain (mapped by `uncertain`)."""
    text = (text or "").strip()
    if text in ("", "0", "0.0"):
        return 0.0
    if text in ("1", "1.0"):
        return 1.0
    if text in ("-1", "-1.0"):
        return {"ignore": IGNORED, "ones": 1.0, "zeros": 0.0}[uncertain]
    raise ValueError(text)


def _image(path, patient, labels, view="", official=None):
    positive = int(any(v == 1.0 for v in labels))  # the stratum of the patient split: any finding
    return ImageFile(path, positive, patient, official, findings=tuple(labels), view=view)


def _nih(config, base):
    columns, rows = _rows(config.labels)
    _require(config.labels, columns, ["Image Index", "Finding Labels", "Patient ID", "View Position"])
    official = {}
    for split, name in (("train", "train_val_list.txt"), ("test", "test_list.txt")):
        listing = os.path.join(base, name)
        if os.path.isfile(listing):
            official.update({line.strip(): split for line in open(listing) if line.strip()})
    found = {}
    for root, dirs, files in os.walk(config.data_dir):
        dirs.sort()
        for name in files:
            found.setdefault(name, os.path.relpath(os.path.join(root, name), config.data_dir).replace(os.sep, "/"))
    images, skipped = [], []
    for row in rows:
        name = row["Image Index"].strip()
        findings = {f.strip() for f in row["Finding Labels"].split("|")} - {"No Finding", ""}
        unknown = findings - set(NIH_FINDINGS)
        if unknown:
            skipped.append(Skipped(name, f"bad_label: unknown finding {sorted(unknown)[0]!r}"))
            continue
        patient = row["Patient ID"].strip()
        if not patient.isdigit():
            skipped.append(Skipped(name, f"no_patient: Patient ID {patient!r} is not a number"))
            continue
        labels = [1.0 if f in findings else 0.0 for f in NIH_FINDINGS]
        images.append(_image(found.get(name, name), f"nih:{int(patient)}", labels,
                             row["View Position"].strip().upper(), official.get(name)))
    return NIH_FINDINGS, images, skipped


def _observations(row, names, uncertain, rel, skipped):
    """The row's labels for `names`, or None (and a bad_label skip) when a cell is not 1, 0, -1 or blank."""
    try:
        return [label_value(row[name], uncertain) for name in names]
    except ValueError as err:
        skipped.append(Skipped(rel, f"bad_label: a cell holds {str(err)!r}, not 1, 0, -1 or blank"))
        return None


def _chexpert(config, base):
    sources = [(config.labels, "train")]
    valid = os.path.join(base, "valid.csv")
    if os.path.basename(config.labels) == "train.csv" and os.path.isfile(valid):
        sources.append((valid, "test"))
    images, skipped = [], []
    for path, official in sources:
        columns, rows = _rows(path)
        _require(path, columns, ["Path", *CHEXPERT_FINDINGS])
        for row in rows:
            rel = _locate(config.data_dir, row["Path"].strip())
            match = re.search(r"(patient\d+)/", rel)
            if not match:
                skipped.append(Skipped(rel, "no_patient: the path names no patientNNNNN folder"))
                continue
            labels = _observations(row, CHEXPERT_FINDINGS, config.uncertain, rel, skipped)
            if labels is None:
                continue
            frontal = row.get("Frontal/Lateral", "").strip().lower() == "frontal"
            view = row.get("AP/PA", "").strip().upper() if frontal else "LATERAL"
            images.append(_image(rel, f"chexpert:{match.group(1)}", labels, view, official))
    return CHEXPERT_FINDINGS, images, skipped


def _locate(data_dir, path):
    """CheXpert's paths start with the set's folder name: accept --data_dir above it or at it."""
    if not os.path.exists(os.path.join(data_dir, path)) and "/" in path:
        inside = path.split("/", 1)[1]
        if os.path.exists(os.path.join(data_dir, inside)):
            return inside
    return path


def _mimic(config, base):
    columns, rows = _rows(config.labels)
    _require(config.labels, columns, ["subject_id", "study_id", *CHEXPERT_FINDINGS])
    studies = {(r["subject_id"].strip(), r["study_id"].strip()): r for r in rows}
    meta_path, split_path = (os.path.join(base, MIMIC_FILES[k]) for k in ("metadata", "split"))
    meta_columns, metadata = _rows(meta_path)
    _require(meta_path, meta_columns, ["dicom_id", "subject_id", "study_id", "ViewPosition"])
    official = {}
    if os.path.isfile(split_path):
        official = {r["dicom_id"].strip(): {"validate": "val"}.get(r["split"].strip(), r["split"].strip())
                    for r in _rows(split_path)[1]}
    images, skipped = [], []
    for row in metadata:
        subject, study, dicom_id = row["subject_id"].strip(), row["study_id"].strip(), row["dicom_id"].strip()
        rel = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
        labelled = studies.get((subject, study))
        if labelled is None:
            skipped.append(Skipped(rel, "no_label: its study has no row in the label file"))
            continue
        labels = _observations(labelled, CHEXPERT_FINDINGS, config.uncertain, rel, skipped)
        if labels is None:
            continue
        images.append(_image(rel, f"mimic:{subject}", labels, row["ViewPosition"].strip().upper(),
                             official.get(dicom_id)))
    return CHEXPERT_FINDINGS, images, skipped


def _rsna(config, base):
    columns, rows = _rows(config.labels)
    _require(config.labels, columns, ["patientId", "Target"])
    folder = "stage_2_train_images"
    target, skipped = collections.OrderedDict(), []
    for row in rows:  # a row per box: a film is positive if any of its rows is
        pid, cell = row["patientId"].strip(), (row["Target"] or "").strip()
        if not pid or cell not in ("0", "1"):
            skipped.append(Skipped(f"{folder}/{pid or '(blank)'}.dcm",
                                   f"bad_label: patientId {pid!r} with Target {cell!r}, not 0 or 1"))
            continue
        target[pid] = max(target.get(pid, 0), int(cell))
    images = []
    for pid, label in target.items():
        rel = f"{folder}/{pid}.dcm"
        view = dicom.view_position(os.path.join(config.data_dir, rel)) if config.views else ""
        images.append(ImageFile(rel, label, f"rsna:{pid}", None, view=view))
    return RSNA_CLASSES, images, skipped


def _generic(config, base):
    columns, rows = _rows(config.labels)
    names = tuple(config.label_columns)
    _require(config.labels, columns, [config.path_column, config.patient_column, *names])
    images, skipped = [], []
    for row in rows:
        rel, patient = row[config.path_column].strip(), row[config.patient_column].strip()
        if not rel or not patient:
            skipped.append(Skipped(rel or "(blank)", "no_image: the row names no image or no patient"))
            continue
        labels = _observations(row, names, config.uncertain, rel, skipped)
        if labels is None:
            continue
        if len(names) == 1:
            if labels[0] == IGNORED:
                skipped.append(Skipped(rel, "uncertain_label: the only label is uncertain (--uncertain=ignore)"))
                continue
            images.append(ImageFile(rel, int(labels[0]), f"csv:{patient}", None))
        else:
            view = row.get(config.view_column, "").strip().upper() if config.view_column else ""
            images.append(_image(rel, f"csv:{patient}", labels, view))
    classes = (f"NO_{names[0].upper()}", names[0].upper()) if len(names) == 1 else names
    return classes, images, skipped


def _below(data_dir, path):
    """Whether `path` (from a label file) names a place below `data_dir`, `..` resolved, links not followed."""
    if os.path.isabs(path) or os.path.splitdrive(path)[0]:
        return False
    top = os.path.normpath(os.path.abspath(data_dir))
    full = os.path.normpath(os.path.join(top, path))
    return full.startswith(top.rstrip(os.sep) + os.sep)


_READERS = {"nih": _nih, "chexpert": _chexpert, "mimic": _mimic, "rsna": _rsna, "csv": _generic}


def read(config):
    """A ConvertConfig with `labels` -> (classes, sorted ImageFiles, Skipped, findings): `findings`
    names the classes when the rows carry a label per finding (a multi-label set), else ().

    Rows naming a file that is not below --data_dir are skipped as `missing_image`; rows whose
    path leads outside it (absolute, or `..` past its top) as `outside_data_dir`, so a label file
    cannot make the converter read another file on the machine; rows whose view is not in
    `config.views` (when given) as `view`.  Paths are judged as written (`..` resolved); symbolic
    links inside --data_dir are followed, since the folder's owner put them there.
    """
    base = os.path.dirname(os.path.abspath(config.labels))
    classes, images, skipped = _READERS[config.format](config, base)
    findings = tuple(classes) if images and images[0].findings else ()
    kept = []
    for image in images:
        if config.views and image.view not in config.views:
            skipped.append(Skipped(image.path, f"view: {image.view or 'unknown'} is not one of "
                                               f"{','.join(config.views)}"))
        elif not _below(config.data_dir, image.path):
            skipped.append(Skipped(image.path, "outside_data_dir: the label file's path leads outside --data_dir"))
        elif not os.path.isfile(os.path.join(config.data_dir, image.path)):
            skipped.append(Skipped(image.path, "missing_image: named in the label file, not found below --data_dir"))
        else:
            kept.append(image)
    return tuple(classes), sorted(kept, key=lambda im: im.path), skipped, findings
