"""Hostile and ordinary image files for the tests, built without decoding them: bombs of memory
(declared sizes, inflation, frames) and of time (scans), garbage, and the ordinary images beside."""
import io
import struct
import zlib

import numpy as np
from PIL import Image


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width=16000, height=16000):
    """A valid gray PNG of `width` x `height` zeros: ~250 KB that decode to width*height bytes.

    Compressed row by row, so building it never holds the image."""
    compressor, row, parts = zlib.compressobj(9), bytes(width + 1), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


def jpeg(height=40, width=30, **options):
    gray = np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def jpeg_declaring(height, width):
    """A small JPEG whose frame header (SOF0) is patched to declare height x width."""
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png(height, width):
    """A gray 8-bit PNG of zeros."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def png16(height=40, width=30):
    """A 16-bit gray PNG using the whole 16-bit range."""
    gray = np.random.default_rng(1).integers(0, 65535, (height, width), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    return buffer.getvalue()


def progressive_jpeg(scans, height=256, width=256):
    """A gray progressive JPEG whose last scan is repeated until it has `scans` scans: a few bytes
    per scan, a pass over every pixel per scan for the decoder (libjpeg warns, and decodes)."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xda"]
    last = data[starts[-1]:data.rindex(b"\xff\xd9")]
    return data[:starts[-1]] + last * (scans - len(starts) + 1) + b"\xff\xd9"


def cmyk_jpeg(height=40, width=30):
    rgb = np.random.default_rng(2).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


def jpeg_fake_frame(height=23000, width=23000):
    """A JPEG whose real frame header (height x width) follows an `FF 00` pair right after the SOI,
    with a fake 64x64 frame header in a comment where a walk that took `FF 00` for a segment lands."""
    def sof(h, w):
        return b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", h, w) + b"\x03" + bytes(9)

    head = b"\xff\xd8\xff\x00" + sof(height, width)
    landing = 2 + 2 + 0xFFC0
    comment = bytes(landing - len(head) - 4) + sof(64, 64) + bytes(64)
    return head + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + b"\xff\xd9"


def _dicom(rows, columns, pixel_data, transfer_syntax, frames=1):
    """An 8-bit gray DICOM file's bytes: Rows x Columns as declared, pixel data as given."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "P1", "CR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixel_data
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_frames(frames, size, broken_after_first=False):
    """A multi-frame JPEG-baseline DICOM of `frames` blank size x size frames (a few KB each);
    with `broken_after_first`, every frame after the first is garbage."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    buffer = io.BytesIO()
    Image.new("L", (size, size), 100).save(buffer, format="JPEG")
    rest = b"garbage!" if broken_after_first else buffer.getvalue()
    return _dicom(size, size, encapsulate([buffer.getvalue()] + [rest] * (frames - 1)), JPEGBaseline8Bit, frames)


def dicom_embedding(frame, rows=64, columns=64):
    """A one-frame JPEG-baseline DICOM whose header says rows x columns around `frame`'s bytes."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    return _dicom(rows, columns, encapsulate([frame]), JPEGBaseline8Bit)


def deflated_dicom(inflated_bytes):
    """A Deflated Explicit VR Little Endian DICOM whose dataset inflates to `inflated_bytes` zeros:
    one self-contained deflate block of 16 MB of zeros, repeated (~16 KB each)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    header = _dicom(8, 8, bytes(64), DeflatedExplicitVRLittleEndian)
    meta_end = 144 + struct.unpack("<I", header[140:144])[0]  # (0002,0000) holds the file meta's length
    chunk = 16 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return header[:meta_end] + block * (inflated_bytes // chunk) + b"\x03\x00"  # an empty final block


def empty_train_shards(records_dir, which="all"):
    """What a manifest naming the wrong files looks like: train shards emptied (every one, or the
    first: a cached split then holds fewer records than counted), their size and checksum
    "matching" (so the cheap checks pass), the record count as before."""
    import hashlib
    import json
    import os

    manifest_path = os.path.join(records_dir, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    train = [shard for shard in manifest["shards"] if shard["split"] == "train"]
    assert len(train) > 1
    for shard in train if which == "all" else train[:1]:
        open(os.path.join(records_dir, shard["file"]), "wb").close()
        shard["bytes"], shard["sha256"] = 0, hashlib.sha256(b"").hexdigest()
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
