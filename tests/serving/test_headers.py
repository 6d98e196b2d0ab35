"""Declared image sizes read from headers in TensorFlow ops, and the reasons inputs are refused."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cxr_fast.serving import headers
from hostile import jpeg, jpeg_declaring, png, png16, png_bomb, progressive_jpeg

@tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int64),
                              tf.TensorSpec([], tf.int64)])
def refusals(batch, max_pixels, max_bytes):
    """Traced once, as the serving signature runs it."""
    return tf.map_fn(lambda data: headers.refusal(data, max_pixels, max_bytes), batch, fn_output_signature=tf.string)


def _refusal(data, max_pixels=64_000_000, max_bytes=1 << 20):
    return refusals(tf.constant([data]), max_pixels, max_bytes).numpy()[0].decode()


@pytest.mark.parametrize("data, size", [
    (jpeg(40, 30), (40, 30)),
    (jpeg(300, 200, progressive=True), (300, 200)),  # SOF2
    (jpeg(50, 70, exif=b"Exif\x00\x00" + bytes(3000)), (50, 70)),  # a long APP1 segment before the frame
    (png(33, 17), (33, 17)),
    (png16(), (40, 30)),
])
def test_declared_size_is_what_pillow_reads(data, size):
    raw, length = headers._bytes(tf.constant(data))
    finder = headers.png_size if data.startswith(b"\x89PNG") else headers.jpeg_size
    found, height, width = finder(raw, length)
    assert bool(found) and (int(height), int(width)) == size == Image.open(io.BytesIO(data)).size[::-1]
    assert _refusal(data) == ""


def test_each_refusal_names_its_reason():
    assert _refusal(png_bomb(16000, 16000)).startswith(
        "too large: the image declares 16000x16000 pixels, over the limit of 64000000 set at export")
    assert _refusal(jpeg_declaring(60000, 60000)).startswith("too large: the image declares 60000x60000 pixels")
    assert _refusal(jpeg(), max_bytes=100).startswith("too large: ") and "over the limit of 100 " in _refusal(
        jpeg(), max_bytes=100)
    assert _refusal(b"just some text") == "not an image: send JPEG or PNG bytes"
    assert _refusal(b"") == "not an image: send JPEG or PNG bytes"
    assert _refusal(b"GIF89a" + bytes(20)) == "not an image: send JPEG or PNG bytes"
    assert _refusal(jpeg()[:20]) == "unreadable: the JPEG has no frame header (truncated or corrupt)"
    assert _refusal(png(8, 8)[:20]) == "unreadable: the PNG has no IHDR header (truncated or corrupt)"
    assert _refusal(jpeg_declaring(0, 10)) == "unreadable: the image declares 10x0 pixels"
    assert _refusal(progressive_jpeg(64)) == ""
    assert _refusal(progressive_jpeg(65)) == ("too large: a JPEG of 65 scans, over the limit of 64 "
                                             "(each scan is a pass over the whole image)")


def test_no_input_makes_the_header_ops_raise():
    # Random bytes behind each signature, every prefix length of a real JPEG and PNG: one string each.
    rng = np.random.default_rng(0)
    good = [jpeg(), png(8, 8)]
    batch = [data[:n] for data in good for n in range(0, len(data), 7)]
    batch += [prefix + rng.bytes(int(rng.integers(0, 64))) for prefix in (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
              for _ in range(100)]
    batch += [b"\xff\xd8" + b"\xff" * 5000, b"\xff\xd8" + b"\xff\xe0\x00\x00" * 2000]  # fill bytes; zero-length loop
    out = refusals(tf.constant(batch), 64_000_000, 1 << 20).numpy()
    assert len(out) == len(batch) and all(isinstance(reason, bytes) for reason in out)
    sof_end = good[0].index(b"\xff\xc0") + 9  # a JPEG prefix passes the header check once it holds the frame header
    lengths = range(0, len(good[0]), 7)
    assert [reason == b"" for reason in out[:len(lengths)]] == [n >= sof_end for n in lengths]


def _sof(height, width):
    return b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03" + bytes(9)


def test_ff00_is_skipped_as_libjpeg_skips_it_not_read_as_a_segment():
    # The walk past the guard: after the SOI, `FF 00` (no marker to libjpeg, which skips it) read as a
    # segment whose "length" (FF C0) jumps to a fake 64x64 frame header hidden in a comment, while
    # libjpeg sizes the real 23000x23000 frame right after the `FF 00`.
    head = b"\xff\xd8\xff\x00" + _sof(23000, 23000)
    landing = 2 + 2 + 0xFFC0  # where a walk that took FF 00 for a segment would land
    comment_start = len(head) + 4
    filler = bytes(landing - comment_start)
    comment = filler + _sof(64, 64) + bytes(64)
    data = head + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + b"\xff\xd9"
    raw, length = headers._bytes(tf.constant(data))
    found, height, width = headers.jpeg_size(raw, length)
    assert bool(found) and (int(height), int(width)) == (23000, 23000)
    assert _refusal(data).startswith("too large: the image declares 23000x23000 pixels")


def test_garbage_and_ff00_before_a_segment_are_skipped_as_libjpeg_does():
    real = jpeg(40, 30)
    for junk in (b"\xff\x00", b"\xff\x00\xff\x00\x55", b"\xff\xff\xff\x00\x12\x34"):
        data = real[:2] + junk + real[2:]
        decoded = tf.io.decode_jpeg(data)  # libjpeg: a warning about extraneous bytes, then the image
        raw, length = headers._bytes(tf.constant(data))
        found, height, width = headers.jpeg_size(raw, length)
        assert bool(found) and (int(height), int(width)) == tuple(decoded.shape[:2]) == (40, 30), junk
