"""DICOM films -> the same 8-bit gray arrays as every other image (pydicom, the `dicom` extra).

What a radiology viewer does before a film is shown, in DICOM's order (PS3.4 N.2):
1. stored values -> modality values: Rescale Slope / Intercept or a Modality LUT
   (`apply_modality_lut`), at the stored Bits Stored;
2. modality values -> display values: the VOI LUT if the file has one (`apply_voi_lut`), else
   its first Window Center / Width (linear), else the film's own full range;
3. MONOCHROME1 (high values dark) inverted, so bone is bright as in MONOCHROME2 films;
4. linear to 0..255.
Compressed transfer syntaxes decode through pydicom's installed handlers (the extra brings
pylibjpeg with libjpeg and OpenJPEG: JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000); a
syntax no installed handler decodes is a skip reason naming it, never a crash.

Imported only when a DICOM file is met, so a set without DICOMs never needs pydicom.
"""
import io

import numpy as np

from cxr_fast.errors import InputError

PREAMBLE = 128  # bytes before the "DICM" magic of a DICOM Part 10 file


def is_dicom(data):
    return len(data) >= PREAMBLE + 4 and data[PREAMBLE:PREAMBLE + 4] == b"DICM"


def _pydicom(error):
    try:
        import pydicom
    except ImportError:
        raise error("unsupported: a DICOM file; install the dicom extra (pip install 'cxr_fast[dicom]')") from None
    return pydicom


def read_header(data, error, max_pixels, pixels=False):
    """Parses the file (without its pixel data unless `pixels`) and checks its size and samples;
    returns the dataset.  Raises `error` with a manifest reason.  Pixels decode later, on access."""
    pydicom = _pydicom(error)
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except Exception as err:  # pydicom raises many types for damaged files
        raise error(f"unreadable: not a readable DICOM file ({type(err).__name__})") from None
    if rows * columns > max_pixels:
        raise error(f"too_large: {columns}x{rows} = {rows * columns} pixels, over the limit of {max_pixels}")
    if int(getattr(dataset, "SamplesPerPixel", 1)) != 1:
        raise error(f"unsupported: DICOM with {dataset.SamplesPerPixel} samples per pixel, not a gray film")
    return dataset


def to_gray(data, error, max_pixels):
    """DICOM bytes -> 2-D uint8 array, as a viewer would display the film (see the module docstring)."""
    dataset = read_header(data, error, max_pixels, pixels=True)  # one parse; the checks before any decoding
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        stored = dataset.pixel_array
    except Exception as err:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise error(f"unsupported: pixel data in {name} not decoded by the installed handlers "
                    f"({type(err).__name__}); pylibjpeg-libjpeg / -openjpeg decode the JPEG family") from None
    if stored.ndim != 2:
        stored = stored[0]  # a multi-frame film: its first frame
    values = apply_modality_lut(stored, dataset).astype(np.float64)
    if "VOILUTSequence" in dataset:
        values = apply_voi_lut(values, dataset, index=0).astype(np.float64)
        low, high = float(values.min()), float(values.max())
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:  # the first window, linear
        center, width = (float(np.atleast_1d(v)[0]) for v in (dataset.WindowCenter, dataset.WindowWidth))
        low, high = center - width / 2, center + width / 2
    else:
        low, high = float(values.min()), float(values.max())
    scaled = (np.clip(values, low, high) - low) / max(high - low, 1e-9)
    if str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.round(scaled * 255).astype(np.uint8)


def view_position(path):
    """A DICOM file's View Position (PA, AP, ...) from its header; "" when missing or unreadable."""
    pydicom = _pydicom(InputError)  # RSNA's --view: no pydicom is a one-line error naming the extra
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition"])
    except Exception:  # missing or damaged: the conversion names the file's problem later
        return ""
    return str(dataset.get("ViewPosition", "")).strip().upper()
