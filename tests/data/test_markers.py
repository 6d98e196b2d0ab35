"""Sizes and scans read from JPEG, JPEG-LS and JPEG 2000 markers without decoding, as the decoders
will find them."""
import io
import struct

import numpy as np
import pydicom
from PIL import Image

from cxr_fast.data import markers
from cxr_fast.data.synthetic_labelled import write_dicom
from hostile import jpeg, jpeg_declaring, jpeg_fake_frame, progressive_jpeg


def test_jpeg_size_is_what_pillow_reads():
    for data in (jpeg(40, 30), jpeg(300, 200, progressive=True), jpeg(50, 70, exif=b"Exif\x00\x00" + bytes(3000))):
        assert markers.declared_size(data) == Image.open(io.BytesIO(data)).size[::-1]
    assert markers.declared_size(jpeg_declaring(20000, 30000)) == (20000, 30000)


def test_ff00_fill_bytes_and_garbage_are_skipped_as_libjpeg_skips_them():
    assert markers.declared_size(jpeg_fake_frame(23000, 23000)) == (23000, 23000)  # not the comment's 64x64
    real = jpeg(40, 30)
    for junk in (b"\xff\x00", b"\xff\xff\xff\x00\x12\x34"):
        assert markers.declared_size(real[:2] + junk + real[2:]) == (40, 30)


def test_jpeg_2000_codestream_and_jp2_file_sizes(tmp_path):
    from pydicom.encaps import get_frame
    from pydicom.uid import JPEG2000Lossless

    path = tmp_path / "film.dcm"
    write_dicom(str(path), np.zeros((48, 40), np.uint8), "P1")
    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless)
    codestream = get_frame(ds.PixelData, 0, number_of_frames=1)
    assert codestream.startswith(b"\xff\x4f\xff\x51") and markers.declared_size(codestream) == (48, 40)
    fake_siz = b"\xff\x4f\xff\x51" + struct.pack(">HHIIII", 41, 0, 30000, 30000, 0, 0)  # declares 30000x30000
    fake_box = struct.pack(">I4s", 8 + len(fake_siz), b"xml ") + fake_siz
    jp2 = (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I4s4sI4s", 20, b"ftyp", b"jp2 ", 0, b"jp2 ")
           + fake_box + struct.pack(">I4s", 8 + len(codestream), b"jp2c") + codestream)
    assert markers.declared_size(jp2) == (48, 40)  # the codestream box's SIZ, not one in an earlier box


def test_unreadable_streams_have_no_size():
    for data in (b"", b"\xff\xd8", jpeg()[:20], b"\xff\xd8\xff\xda" + bytes(20), b"\x00\x00\x00\x0cjP  \r\n\x87\n",
                 b"\xff\x4f\xff\x51", bytes(100)):
        assert markers.declared_size(data) is None, data[:8]


def test_scans_are_counted():
    assert markers.scan_count(jpeg()) == 1
    assert markers.scan_count(progressive_jpeg(6)) == 6 and markers.scan_count(progressive_jpeg(500)) == 500
