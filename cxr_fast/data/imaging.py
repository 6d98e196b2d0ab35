"""Reading any chest X-ray file into a gray uint8 array, the one way training and prediction share.

Pillow, not TensorFlow, decodes here: it reads CMYK and 16-bit files that `tf.io.decode_image`
refuses, reports truncated files and decompression bombs as errors, and imports in a fraction of
a second, so the converter's worker processes stay light.  `cxr_fast.predict` calls the same
`load_gray`, so new images get exactly the preprocessing the training shards got.

Resizing squashes to a square (the reference did not keep the aspect ratio) with Pillow's
bilinear filter, which widens its support when shrinking and is therefore antialiased.  A JPEG
is first decoded at a reduced DCT scale no smaller than twice the target (`Image.draft`), which
makes full-size X-rays several times cheaper to convert at the cost of a box prefilter.
"""
import hashlib
import io
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps

from cxr_fast.config import DEFAULT_MAX_PIXELS, ENCODINGS, MAX_JPEG_SCANS, max_file_bytes
from cxr_fast.data import dicom, markers


class ImageError(Exception):
    """A file that cannot be used; str() is a manifest reason of the form `code: detail`."""


def read(path, max_pixels=DEFAULT_MAX_PIXELS):
    """A file's bytes, refused (ImageError) when it is not a regular file (a FIFO would block, a
    device never end) or holds more than `config.max_file_bytes(max_pixels)`; reads no more."""
    limit = max_file_bytes(max_pixels)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise ImageError(f"unreadable: {err.strerror}") from None
    with open(descriptor, "rb") as f:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ImageError("unreadable: not a regular file")
        try:
            data = f.read(limit + 1) if status.st_size <= limit else b""  # read at most limit + 1 if it grew
        except OSError as err:
            raise ImageError(f"unreadable: {err.strerror}") from None
    if max(len(data), status.st_size) > limit:
        raise ImageError(f"too_large: over {limit} bytes, more than an image within the limit of "
                         f"{max_pixels} pixels needs")
    return data


def open_checked(data, max_pixels=DEFAULT_MAX_PIXELS):
    """Opens encoded bytes (header only) and refuses unreadable files and oversized images.

    A DICOM file returns its pydicom dataset (without pixels), anything else a Pillow image.
    """
    if not data:
        raise ImageError("unreadable: zero-byte file")
    if dicom.is_dicom(data):
        return dicom.read_header(data, ImageError, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit follows
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ImageError(f"too_large: {err}") from None
    except Exception as err:  # Pillow raises many types for garbage input
        raise ImageError(f"unreadable: not a readable image ({type(err).__name__})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"too_large: {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
    if width < 1 or height < 1:
        raise ImageError(f"unreadable: image has size {width}x{height}")
    scans = markers.excess_scans(data) if image.format in ("JPEG", "MPO") else 0
    if scans:
        raise ImageError(f"too_large: a JPEG of {scans} scans, over the limit of {MAX_JPEG_SCANS} (each scan is a "
                         "pass over the whole image)")
    return image


def to_gray(image):
    """Any Pillow image -> 2-D uint8 array; 16- and 32-bit images are shifted to 8 bits.

    A high-bit-depth film is shifted by the smallest standard depth (8, 10, 12, 14 or 16 bits)
    that holds its maximum, so a 12-bit image stored in 16 bits is not rendered nearly black.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        array = np.clip(array, 0, None)
        bits = next((b for b in (8, 10, 12, 14, 16, 32) if array.max() < 2**b), 32)
        return np.clip(array / 2 ** (bits - 8), 0, 255).astype(np.uint8)
    if image.mode == "CMYK":
        image = image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def load_gray(data, size, max_pixels=DEFAULT_MAX_PIXELS):
    """Encoded bytes -> uint8 [size, size] (or full resolution when size is 0).

    Raises ImageError with a manifest reason for unreadable, truncated or oversized files.
    """
    gray = dicom.to_gray(data, ImageError, max_pixels) if dicom.is_dicom(data) else _decode(data, size, max_pixels)
    if size and gray.shape != (size, size):
        gray = np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR))
    return gray


def _decode(data, size, max_pixels):
    image = open_checked(data, max_pixels)
    try:
        if size and image.format == "JPEG":
            image.draft("L", (2 * size, 2 * size))
        return to_gray(image)
    except ImageError:
        raise
    except Exception as err:
        raise ImageError(f"truncated: decoding failed ({type(err).__name__}: {err})") from None


def encode(gray, encoding, jpeg_quality=95):
    """2-D uint8 array -> bytes in the stored `encoding` (jpeg, png or raw row-major pixels)."""
    if encoding == "raw":
        return np.ascontiguousarray(gray, dtype=np.uint8).tobytes()
    buffer = io.BytesIO()
    if encoding == "jpeg":
        Image.fromarray(gray).save(buffer, format="JPEG", quality=jpeg_quality)
    elif encoding == "png":
        Image.fromarray(gray).save(buffer, format="PNG", compress_level=6)
    else:
        raise ValueError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    return buffer.getvalue()


def fingerprint(task):
    """Worker: (path, max_pixels) -> (sha1 hex of the file, reason or None); reads headers only."""
    path, max_pixels = task
    try:
        data = read(path, max_pixels)
    except ImageError as err:
        return None, str(err)
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        open_checked(data, max_pixels)
    except ImageError as err:
        return sha1, str(err)
    return sha1, None


def prepare(task):
    """Worker: (path, size, encoding, jpeg_quality, max_pixels) -> (encoded, height, width) or reason str."""
    path, size, encoding, jpeg_quality, max_pixels = task
    try:
        gray = load_gray(read(path, max_pixels), size, max_pixels)
    except ImageError as err:
        return str(err)
    return encode(gray, encoding, jpeg_quality), gray.shape[0], gray.shape[1]
