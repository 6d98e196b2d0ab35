"""DICOM films decode as a viewer shows them: rescale, window, MONOCHROME1 inverted, compressed
syntaxes through the installed handlers, clear reasons for what cannot be read."""
import numpy as np
import pydicom
import pytest

from cxr_fast.data import dicom, imaging
from cxr_fast.data.synthetic_labelled import write_dicom


def _gray(size=40):
    y, x = np.mgrid[0:size, 0:size]
    return ((x * 5 + y * 2) % 256).astype(np.uint8)


@pytest.mark.parametrize("monochrome1,compress", [(False, False), (True, False), (False, True)])
def test_round_trip_to_the_films_gray(tmp_path, monochrome1, compress):
    gray = _gray()
    path = tmp_path / "film.dcm"
    write_dicom(str(path), gray, "P1", monochrome1=monochrome1, compress=compress)
    data = path.read_bytes()
    assert dicom.is_dicom(data)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID.is_compressed == compress
    out = imaging.load_gray(data, 0)
    assert out.dtype == np.uint8 and out.shape == gray.shape
    assert np.abs(out.astype(int) - gray).max() <= 1  # bone stays bright in MONOCHROME1 too
    assert imaging.load_gray(data, 16).shape == (16, 16)


def test_jpeg_2000_decodes_through_the_extras_pylibjpeg(tmp_path):
    # The dicom extra's pylibjpeg-openjpeg both writes (pydicom's compress) and reads JPEG 2000.
    from pydicom.uid import JPEG2000Lossless

    gray, path = _gray(), tmp_path / "film.dcm"
    write_dicom(str(path), gray, "P1")
    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless)
    ds.save_as(path)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert np.abs(imaging.load_gray(path.read_bytes(), 0).astype(int) - gray).max() <= 1


def test_window_and_rescale_are_applied(tmp_path):
    path = tmp_path / "film.dcm"
    write_dicom(str(path), _gray(), "P1")
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth = 1024 - 1016 + 1024, 2048  # a narrower window: the upper half saturates
    ds.save_as(path)
    narrow = imaging.load_gray(path.read_bytes(), 0)
    assert narrow.max() == 255 and (narrow == 255).mean() > 0.2
    del ds.WindowCenter, ds.WindowWidth  # no window: the film's own range
    ds.RescaleSlope = 2
    ds.save_as(path)
    full = imaging.load_gray(path.read_bytes(), 0)
    assert full.min() == 0 and full.max() == 255


def test_unreadable_and_oversized_dicoms_are_reasons(tmp_path):
    path = tmp_path / "film.dcm"
    write_dicom(str(path), _gray(), "P1")
    data = path.read_bytes()
    with pytest.raises(imaging.ImageError, match="too_large"):
        imaging.load_gray(data, 0, max_pixels=100)
    with pytest.raises(imaging.ImageError, match="unreadable"):
        imaging.load_gray(data[:140], 0)  # the preamble and magic, then nothing
    write_dicom(str(path), _gray(), "P1", transfer_syntax="1.2.840.10008.1.2.4.100")
    with pytest.raises(imaging.ImageError, match="unsupported: pixel data in MPEG2"):
        imaging.load_gray(path.read_bytes(), 0)
    assert imaging.fingerprint((str(path), 10**6))[1] is None  # the header is fine: the pixels are not
