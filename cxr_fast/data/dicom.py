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

Work is bounded before it is done: a deflated dataset is inflated at most to
`config.max_file_bytes` before pydicom parses it; only the first frame of a multi-frame file is
decoded; an embedded JPEG / JPEG-LS / JPEG 2000 frame must declare the size the header's Rows and
Columns state (which the pixel limit checked), else it is refused before decoding.

Imported only when a DICOM file is met, so a set without DICOMs never needs pydicom.
"""
import io
import zlib

import numpy as np

from cxr_fast.config import MAX_JPEG_SCANS, max_file_bytes
from cxr_fast.data import markers
from cxr_fast.errors import InputError

PREAMBLE = 128  # bytes before the "DICM" magic of a DICOM Part 10 file
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset zlib-deflated


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
    _check_inflated_size(data, error, max_pixels)
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


def _check_inflated_size(data, error, max_pixels):
    """A deflated dataset is inflated whole before any element can be read: count its inflated
    size here (up to max_file_bytes(max_pixels)) and refuse it past that, before pydicom inflates
    it all."""
    from pydicom.filereader import read_dataset

    stream = io.BytesIO(data)
    stream.seek(PREAMBLE + 4)
    try:  # the file meta group (0002,xxxx): never deflated
        meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True,
                            stop_when=lambda tag, vr, length: tag.group != 2)
        if meta.get("TransferSyntaxUID") != DEFLATED:
            return
        limit, inflated = max_file_bytes(max_pixels), 0
        inflater, pending = zlib.decompressobj(-zlib.MAX_WBITS), data[stream.tell():]
        while pending and inflated <= limit:  # counted 16 MB at a time, never held
            inflated += len(inflater.decompress(pending, 1 << 24))
            pending = inflater.unconsumed_tail
    except Exception as err:
        raise error(f"unreadable: not a readable DICOM file ({type(err).__name__})") from None
    if inflated > limit:
        raise error(f"too_large: the deflated dataset inflates past {limit} bytes, more than a film "
                    f"within the limit of {max_pixels} pixels needs")


def to_gray(data, error, max_pixels):
    """DICOM bytes -> 2-D uint8 array, as a viewer would display the film (see the module docstring).

    Float32 and in place: a 64 MP film needs its stored values, one float32 copy and the result."""
    dataset = read_header(data, error, max_pixels, pixels=True)  # one parse; the checks before any decoding
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    stored = _first_frame(dataset, error)
    if "ModalityLUTSequence" in dataset:
        values = np.asarray(apply_modality_lut(stored, dataset), np.float32)
    else:  # Rescale Slope / Intercept, as apply_modality_lut applies them, in float32
        values = stored.astype(np.float32)
        values *= float(getattr(dataset, "RescaleSlope", 1) or 1)
        values += float(getattr(dataset, "RescaleIntercept", 0) or 0)
    del stored
    if "VOILUTSequence" in dataset:
        values = np.asarray(apply_voi_lut(values, dataset, index=0), np.float32)
        low, high = float(values.min()), float(values.max())
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:  # the first window, linear
        center, width = (float(np.atleast_1d(v)[0]) for v in (dataset.WindowCenter, dataset.WindowWidth))
        low, high = center - width / 2, center + width / 2
    else:
        low, high = float(values.min()), float(values.max())
    np.clip(values, low, high, out=values)
    values -= low
    values *= 255 / max(high - low, 1e-9)
    if str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        np.subtract(255, values, out=values)
    return np.rint(values, out=values).astype(np.uint8)


def _first_frame(dataset, error):
    """The stored values of the film's first frame (the only one decoded), after checking that an
    installed handler decodes its syntax and that an embedded image declares the header's size."""
    from pydicom.pixels import get_decoder, pixel_array

    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in dataset or syntax is None:
        raise error("unreadable: the DICOM file holds no pixel data or no transfer syntax")
    if syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:  # a syntax pydicom has no decoder for at all
            available = False
        if not available:
            raise error(f"unsupported: pixel data in {getattr(syntax, 'name', syntax)}, which no installed "
                        "handler decodes; pylibjpeg-libjpeg / -openjpeg (the dicom extra) decode the JPEG family")
    if syntax.is_encapsulated:
        _check_embedded_frame(dataset, error)
    try:
        stored = pixel_array(dataset, index=0)
    except Exception as err:
        raise error(f"truncated: the pixel data could not be decoded ({type(err).__name__})") from None
    return stored if stored.ndim == 2 else stored[0]


def _check_embedded_frame(dataset, error):
    """Refuses a compressed first frame that declares another size than Rows x Columns (or none
    that can be read): a decoder allocates what the embedded stream declares."""
    from pydicom.encaps import get_frame
    from pydicom.uid import RLELossless

    if dataset.file_meta.TransferSyntaxUID == RLELossless:
        return  # RLE: no size of its own; pydicom's decoder allocates Rows x Columns
    try:
        frame = get_frame(dataset.PixelData, 0, number_of_frames=int(getattr(dataset, "NumberOfFrames", 1) or 1))
    except Exception as err:
        raise error(f"truncated: the encapsulated pixel data has no readable first frame ({type(err).__name__})") \
            from None
    declared = markers.declared_size(frame)
    if declared is None:
        raise error("unreadable: the size of the embedded image cannot be read from its header")
    if declared != (int(dataset.Rows), int(dataset.Columns)):
        raise error(f"unreadable: the embedded image declares {declared[1]}x{declared[0]} pixels, the DICOM "
                    f"header {dataset.Columns}x{dataset.Rows}")
    scans = markers.excess_scans(frame)
    if scans:
        raise error(f"too_large: the embedded image has {scans} JPEG scans, over the limit of {MAX_JPEG_SCANS}")


def view_position(path):
    """A DICOM file's View Position (PA, AP, ...) from its header; "" when missing or unreadable."""
    pydicom = _pydicom(InputError)  # RSNA's --view: no pydicom is a one-line error naming the extra
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition"])
    except Exception:  # missing or damaged: the conversion names the file's problem later
        return ""
    return str(dataset.get("ViewPosition", "")).strip().upper()
