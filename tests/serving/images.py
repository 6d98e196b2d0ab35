"""Hostile and ordinary encoded images for the serving tests, built without decoding them."""
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
