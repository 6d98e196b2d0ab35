"""Synthetic stand-ins for the label-file sets: tiny films named, laid out and labelled per format.

    python -m tools.make_synthetic --format=nih --output_dir=data/nih_synthetic --num_patients=60

Each format's folder holds its films where the real set keeps them and its label files with
the published columns (`cxr_fast.data.labelfiles`), so `tools.make_tfrecords --labels=...
--format=...` runs on it as on the real set.  Films are `cxr_fast.data.synthetic`'s (a
patient's anatomy shared by their films); a film carries opacities when its format's `sign`
finding is positive, so that finding is learnable.  The other findings are drawn at random.
Each set also holds what real label files hold: a row naming a missing image, an unreadable
file, lateral views (where the format has views) and uncertain labels (CheXpert's -1).
RSNA's films are DICOMs written with pydicom (12 bits in 16, rescale and window, some
MONOCHROME1, one RLE-compressed, one in a transfer syntax no handler decodes).
"""
import csv
import os

import numpy as np
from PIL import Image

from cxr_fast import atomic
from cxr_fast.data import labelfiles, synthetic

LABEL_FILES = {"nih": "Data_Entry_2017.csv", "chexpert": "CheXpert-v1.0-small/train.csv",
               "mimic": "mimic-cxr-2.0.0-chexpert.csv", "rsna": "stage_2_train_labels.csv", "csv": "labels.csv"}
SIGN = {"nih": "Infiltration", "chexpert": "Lung Opacity", "mimic": "Lung Opacity", "rsna": "PNEUMONIA",
        "csv": "opacity"}
CSV_FINDINGS = ("opacity", "effusion", "nodule")
_UNDECODABLE_SYNTAX = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no pydicom handler decodes it


def _film(rng, anatomy_seed, positive, size):
    task = synthetic.FilmTask(path="", seed=int(rng.integers(2**31)), anatomy_seed=anatomy_seed,
                              pneumonia=bool(positive), width=size, height=size, difficulty=0.0)
    return synthetic.draw(task)


def _save(root, rel, gray):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(gray).save(path)


def _write_csv(root, rel, header, rows):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows(rows)


def _patients(config):
    """[(patient index, anatomy seed, films, test patient)] drawn from the config's seed."""
    rng = np.random.default_rng([config.seed, 7])
    return [(p, int(rng.integers(2**31)), 1 + int(rng.random() < 0.4), p % 5 == 4) for p in range(config.num_patients)]


def _findings(rng, names, sign):
    """0/1 per finding; the sign finding in about half of the films, each other one in ~5%."""
    return {name: int(rng.random() < (0.5 if name == sign else 0.05)) for name in names}


def _nih(config, root, rng, size):
    rows, lists = [], {"train_val_list.txt": [], "test_list.txt": []}
    for patient, anatomy, films, test in _patients(config):
        for n in range(films):
            name = f"{patient + 1:08d}_{n:03d}.png"
            found = _findings(rng, labelfiles.NIH_FINDINGS, SIGN["nih"])
            _save(root, f"images_001/images/{name}", _film(rng, anatomy, found[SIGN["nih"]], size))
            labels = "|".join(k for k, v in found.items() if v) or "No Finding"
            view = "AP" if rng.random() < 0.3 else "PA"
            rows.append([name, labels, n, patient + 1, int(rng.integers(20, 80)), "MF"[patient % 2], view,
                         size, size, 0.143, 0.143])
            lists["test_list.txt" if test else "train_val_list.txt"].append(name)
    rows.append(["99999999_000.png", "No Finding", 0, 99999999, 40, "M", "PA", size, size, 0.143, 0.143])  # missing
    _write_csv(root, LABEL_FILES["nih"], ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                                          "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                                          "OriginalImagePixelSpacing[x", "y]"], rows)
    for name, names in lists.items():
        atomic.write_text(os.path.join(root, name), "\n".join(names) + "\n")


def _observations(rng, sign):
    """CheXpert's cells: 1.0, 0.0, -1.0 (uncertain) or blank."""
    found = _findings(rng, labelfiles.CHEXPERT_FINDINGS, sign)
    cells = {}
    for name, value in found.items():
        draw = rng.random()
        cells[name] = "1.0" if value else "-1.0" if draw < 0.1 else "" if draw < 0.6 else "0.0"
    return found[sign], [cells[name] for name in labelfiles.CHEXPERT_FINDINGS]


def _chexpert(config, root, rng, size):
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *labelfiles.CHEXPERT_FINDINGS]
    sets = {"train": [], "valid": []}
    for patient, anatomy, films, test in _patients(config):
        folder = "valid" if test else "train"
        for study in range(films):
            positive, cells = _observations(rng, SIGN["chexpert"])
            for view, kind in ((1, "frontal"), (2, "lateral"))[:1 + (study == 0 and patient % 3 == 0)]:
                rel = f"CheXpert-v1.0-small/{folder}/patient{patient + 1:05d}/study{study + 1}/view{view}_{kind}.jpg"
                _save(root, rel, _film(rng, anatomy, positive, size))
                sets[folder].append([rel, "Male", 50, kind.capitalize(), "PA" if kind == "frontal" else "", *cells])
    sets["train"].append(["CheXpert-v1.0-small/train/patient99999/study1/view1_frontal.jpg", "Male", 50, "Frontal",
                          "PA", *[""] * 14])  # missing
    for folder, rows in sets.items():
        _write_csv(root, f"CheXpert-v1.0-small/{folder}.csv", header, rows)


def _mimic(config, root, rng, size):
    labels, metadata, split = [], [], []
    for patient, anatomy, films, test in _patients(config):
        subject = str(10000000 + patient)
        for s in range(films):
            study = str(50000000 + 100 * patient + s)
            positive, cells = _observations(rng, SIGN["mimic"])
            labels.append([subject, study, *cells])
            for v, view in enumerate(("PA", "LATERAL")[:1 + (s == 0 and patient % 3 == 0)]):
                dicom_id = f"{patient:04d}{s:02d}{v}-synthetic"
                _save(root, f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg",
                      _film(rng, anatomy, positive, size))
                metadata.append([dicom_id, subject, study, view])
                split.append([dicom_id, study, subject, "test" if test else "train"])
    metadata.append(["missing-synthetic", subject, study, "PA"])  # an image not on disk
    split.append(["missing-synthetic", study, subject, "train"])
    _write_csv(root, LABEL_FILES["mimic"], ["subject_id", "study_id", *labelfiles.CHEXPERT_FINDINGS], labels)
    _write_csv(root, labelfiles.MIMIC_FILES["metadata"], ["dicom_id", "subject_id", "study_id", "ViewPosition"],
               metadata)
    _write_csv(root, labelfiles.MIMIC_FILES["split"], ["dicom_id", "study_id", "subject_id", "split"], split)


def write_dicom(path, gray, patient_id, monochrome1=False, compress=False, transfer_syntax=None, view="PA"):
    """A gray uint8 film as a 12-bit DICOM (Rescale Intercept -1024, a window covering the film).

    Decoded as a viewer would (`cxr_fast.data.dicom`), it gives `gray` back within a gray level.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

    stored = (255 - gray if monochrome1 else gray).astype(np.uint16) * 16 + 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality, ds.ViewPosition = patient_id, "CR", view
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    # gray g -> stored 16 g + 8 -> modality 16 g - 1016; the window [-1016, 3064] maps it back to g
    ds.WindowCenter, ds.WindowWidth = 1024, 4080
    ds.PixelData = stored.tobytes()
    if compress:
        ds.compress(RLELossless, stored)
    if transfer_syntax:  # an encapsulated stream in that syntax (here the raw bytes: never decoded)
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([stored.tobytes()])
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _rsna(config, root, rng, size):
    rows = []
    for patient, anatomy, _, _ in _patients(config):
        pid = f"{patient:04d}-synthetic-{int(rng.integers(1 << 30)):08x}"
        positive = int(rng.random() < 0.4)
        gray = _film(rng, anatomy, positive, size)
        write_dicom(os.path.join(root, f"stage_2_train_images/{pid}.dcm"), gray, pid, monochrome1=patient % 4 == 1,
                    compress=patient == 2, transfer_syntax=_UNDECODABLE_SYNTAX if patient == 3 else None,
                    view="AP" if patient % 3 == 0 else "PA")
        boxes = [[int(v) for v in rng.integers(0, size // 2, 4)] for _ in range(1 + (patient % 2))] if positive else [
            ["", "", "", ""]]
        rows += [[pid, *box, positive] for box in boxes]
    rows.append(["missing-synthetic", "", "", "", "", 0])
    _write_csv(root, LABEL_FILES["rsna"], ["patientId", "x", "y", "width", "height", "Target"], rows)


def _generic(config, root, rng, size):
    rows = []
    for patient, anatomy, films, _ in _patients(config):
        for n in range(films):
            found = _findings(rng, CSV_FINDINGS, SIGN["csv"])
            rel = f"films/{patient:04d}_{n}.png"
            _save(root, rel, _film(rng, anatomy, found[SIGN["csv"]], size))
            cells = [("-1" if rng.random() < 0.1 else str(v)) if name != SIGN["csv"] else str(v)
                     for name, v in found.items()]
            rows.append([rel, f"P{patient:04d}", "PA", *cells])
    rows.append(["", "P9999", "PA", "1", "0", "0"])  # names no image
    with open(os.path.join(root, "films/unreadable.png"), "wb") as f:
        f.write(b"not a png")
    rows.append(["films/unreadable.png", "P9998", "PA", "0", "0", "0"])
    _write_csv(root, LABEL_FILES["csv"], ["file", "patient", "view", *CSV_FINDINGS], rows)


_WRITERS = {"nih": _nih, "chexpert": _chexpert, "mimic": _mimic, "rsna": _rsna, "csv": _generic}


def generate(config, log=print):
    """Writes the synthetic stand-in of `config.format`; returns the path of its label file."""
    config.validate()
    rng = np.random.default_rng([config.seed, 8])
    size = max(32, min(config.min_size, 256))
    with atomic.staged_dir(config.output_dir, config.overwrite) as staging:
        _WRITERS[config.format](config, staging, rng, size)
    log(f"wrote a synthetic {config.format} set of {config.num_patients} patients ({size} px films) to "
        f"{config.output_dir}; label file {LABEL_FILES[config.format]}")
    return os.path.join(config.output_dir, LABEL_FILES[config.format])
