"""What an encoded JPEG, JPEG-LS or JPEG 2000 stream declares about itself, read from its markers
without decoding: the size a decoder will allocate and the number of passes it will make.

The converter and `predict` (through `imaging` and `dicom`) check these before decoding; the
serving graph reads the same from its own TensorFlow ops (`cxr_fast.serving.headers`).
"""
import struct

from cxr_fast.config import MAX_JPEG_SCANS

_JPEG_FRAMES = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}  # SOF0-15 and JPEG-LS's SOF55
_J2K_START = b"\xff\x4f\xff\x51"  # a JPEG 2000 codestream: SOC, then the SIZ segment
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def declared_size(frame):
    """(height, width) a JPEG, JPEG-LS or JPEG 2000 stream declares; None if unreadable.

    JPEG markers are walked as libjpeg walks them (bytes that are not 0xFF and fill bytes skipped,
    standalone markers two bytes, segments their length) up to the first frame header; a JP2 file's
    boxes are walked to its codestream, whose SIZ segment holds the size.
    """
    if frame.startswith(_JP2_SIGNATURE):
        frame = _jp2_codestream(frame)
    if frame.startswith(_J2K_START) and len(frame) >= 24:
        width, height, x_offset, y_offset = struct.unpack(">IIII", frame[8:24])
        return height - y_offset, width - x_offset
    if not frame.startswith(b"\xff\xd8"):
        return None
    position = 2
    while position + 9 <= len(frame):
        if frame[position] != 0xFF or frame[position + 1] == 0xFF:
            position += 1
            continue
        marker = frame[position + 1]
        if marker in _JPEG_FRAMES:
            return struct.unpack(">HH", frame[position + 5:position + 9])
        if marker in (0xDA, 0xD9):  # a scan or the end before any frame header
            return None
        standalone = marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7
        position += 2 if standalone else 2 + struct.unpack(">H", frame[position + 2:position + 4])[0]
    return None


def _jp2_codestream(data):
    """The contents of a JP2 file's contiguous codestream box ("jp2c"); b"" if it has none."""
    position = 0
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        header = 8
        if length == 1 and position + 16 <= len(data):  # a 64-bit length follows the type
            length, header = struct.unpack(">Q", data[position + 8:position + 16])[0], 16
        if kind == b"jp2c":
            return data[position + header:] if length == 0 else data[position + header:position + length]
        if length < header:  # 0 ("to the end") before the codestream, or a damaged length
            return b""
        position += length
    return b""


def excess_scans(data):
    """A JPEG's scans (`scan_count`) when they are over MAX_JPEG_SCANS, else 0: the one check the
    converter, predict and DICOM frames make before decoding."""
    scans = scan_count(data)
    return scans if scans > MAX_JPEG_SCANS else 0


def scan_count(data):
    """An upper bound of a JPEG's scans: its SOS markers (FF DA), counted anywhere in the bytes.

    Inside entropy-coded data an FF is always followed by 00 or a restart marker, so every real
    scan is counted; metadata that happens to hold FF DA only counts more."""
    return data.count(b"\xff\xda")
