"""DICOM films decode as a viewer shows them: rescale, window, MONOCHROME1 inverted, compressed
syntaxes through the installed handlers, clear reasons for what cannot be read."""
import numpy as np
import pydicom
import pytest

from cxr_fast.data import dicom, imaging
from cxr_fast.data.synthetic_labelled import write_dicom
from hostile import deflated_dicom, dicom_embedding, dicom_frames, jpeg, jpeg_declaring, progressive_jpeg


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


def test_a_deflated_dataset_decodes_and_one_inflating_past_the_limit_is_refused(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    gray, path = _gray(), tmp_path / "film.dcm"
    write_dicom(str(path), gray, "P1")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path)
    assert np.abs(imaging.load_gray(path.read_bytes(), 0).astype(int) - gray).max() <= 1
    bomb = deflated_dicom(2 << 30)  # 2 MB that pydicom would inflate to 2 GB before reading Rows
    with pytest.raises(imaging.ImageError, match="too_large: the deflated dataset inflates past 144777216 bytes"):
        imaging.load_gray(bomb, 0)


def test_only_the_first_frame_of_a_multi_frame_film_is_decoded():
    # Frames after the first are garbage: decoding them (as pixel_array without an index does) fails.
    gray = imaging.load_gray(dicom_frames(50, 64, broken_after_first=True), 0)
    assert gray.shape == (64, 64)


def test_an_embedded_image_must_declare_the_headers_size():
    assert imaging.load_gray(dicom_embedding(jpeg(64, 64)), 0).shape == (64, 64)
    with pytest.raises(imaging.ImageError, match="unreadable: the embedded image declares 20000x20000 pixels, "
                                                 "the DICOM header 64x64"):
        imaging.load_gray(dicom_embedding(jpeg_declaring(20000, 20000)), 0)
    with pytest.raises(imaging.ImageError, match="unreadable: the size of the embedded image cannot be read"):
        imaging.load_gray(dicom_embedding(b"not a JPEG at all"), 0)
    with pytest.raises(imaging.ImageError, match="too_large: the embedded image has 500 JPEG scans"):
        imaging.load_gray(dicom_embedding(progressive_jpeg(500, 64, 64)), 0)


def test_a_truncated_film_is_called_truncated(tmp_path):
    path = tmp_path / "film.dcm"
    write_dicom(str(path), _gray(), "P1")
    with pytest.raises(imaging.ImageError, match="truncated: the pixel data could not be decoded"):
        imaging.load_gray(path.read_bytes()[:-1000], 0)
