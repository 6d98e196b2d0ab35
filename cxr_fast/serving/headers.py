"""What an encoded image declares about itself, read from its header in TensorFlow ops that never fail.

The serving signature takes bytes from anyone who can reach the server; a 249 KB PNG may
declare 16000x16000 pixels and a decoder would allocate all of them.  So before anything is
decoded, `refusal` reads the declared width and height (JPEG: the first SOF segment, found by
walking the segments; PNG: IHDR) and names what is wrong with an input, or returns "".  Every
read is bounds-checked (the bytes are padded and indices clamped), so no input, however short
or strange, makes these ops raise: a serving graph cannot catch an exception per image.
"""
import tensorflow as tf

from cxr_fast.config import MAX_JPEG_SCANS

_PAD = 16
_PNG_SIGNATURE = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
_IHDR = [0x49, 0x48, 0x44, 0x52]
_MAX_SEGMENTS = 4096  # a real JPEG has tens before its SOF; the walk stops here either way


def _bytes(data):
    """int32 [len + _PAD] of the bytes (zero padded) and the true length."""
    raw = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32)
    return tf.concat([raw, tf.zeros([_PAD], tf.int32)], 0), tf.size(raw)


def _at(raw, index):
    return raw[tf.clip_by_value(index, 0, tf.size(raw) - 1)]


def _big_endian(raw, index, width):
    value = tf.constant(0, tf.int64)
    for k in range(width):
        value = value * 256 + tf.cast(_at(raw, index + k), tf.int64)
    return value


def _starts_with(raw, length, signature):
    return tf.logical_and(length >= len(signature), tf.reduce_all(tf.equal(raw[:len(signature)], signature)))


def png_size(raw, length):
    """(found, height, width) from a PNG's IHDR chunk (which the format requires first)."""
    found = tf.logical_and(length >= 24, tf.reduce_all(tf.equal(raw[12:16], _IHDR)))
    return found, _big_endian(raw, 20, 4), _big_endian(raw, 16, 4)


def jpeg_size(raw, length):
    """(found, height, width) from a JPEG's first start-of-frame segment, found as libjpeg finds it.

    Walks from the SOI as libjpeg's `next_marker` does: bytes that are not 0xFF are skipped one
    at a time (garbage), fill bytes (0xFF) skipped, `FF 00` skipped as garbage (it is no marker
    and has no length), standalone markers (TEM, RSTn) two bytes, other segments their stored
    length; stops at the first SOFn (C0-CF except the DHT, JPG and DAC markers C4, C8, CC), at
    SOS or EOI, after _MAX_SEGMENTS steps, or at the end of the bytes.  A JPEG it cannot size is
    refused, so the size checked is the size the decoder will allocate.
    """
    def condition(position, found, height, width, steps):
        return tf.logical_and(tf.logical_and(tf.logical_not(found), position + 9 <= length), steps < _MAX_SEGMENTS)

    def body(position, found, height, width, steps):
        lead, marker = _at(raw, position), _at(raw, position + 1)
        is_sof = tf.logical_and(tf.logical_and(marker >= 0xC0, marker <= 0xCF),
                                tf.logical_and(tf.logical_and(marker != 0xC4, marker != 0xC8), marker != 0xCC))
        standalone = tf.logical_or(tf.logical_or(marker == 0x01, marker == 0x00),
                                   tf.logical_and(marker >= 0xD0, marker <= 0xD7))
        garbage = lead != 0xFF
        stop = tf.logical_and(tf.logical_not(garbage), tf.logical_or(marker == 0xDA, marker == 0xD9))
        is_sof = tf.logical_and(is_sof, tf.logical_not(garbage))
        segment = 2 + tf.cast(_big_endian(raw, position + 2, 2), tf.int32)
        step = tf.where(tf.logical_or(garbage, marker == 0xFF), 1, tf.where(standalone, 2, segment))
        next_position = tf.where(tf.logical_or(stop, is_sof), length, position + step)
        found = tf.logical_and(is_sof, tf.logical_not(stop))
        height = tf.where(found, _big_endian(raw, position + 5, 2), height)
        width = tf.where(found, _big_endian(raw, position + 7, 2), width)
        return next_position, found, height, width, steps + 1

    start = (tf.constant(2), tf.constant(False), tf.constant(0, tf.int64), tf.constant(0, tf.int64), tf.constant(0))
    if_soi = _starts_with(raw, length, [0xFF, 0xD8])
    _, found, height, width, _ = tf.while_loop(condition, body, start)
    return tf.logical_and(if_soi, found), height, width


def jpeg_scans(raw):
    """An upper bound of a JPEG's scans: its SOS markers (FF DA) anywhere in the bytes, as
    `cxr_fast.data.markers.scan_count` counts them for the converter and predict."""
    return tf.reduce_sum(tf.cast(tf.logical_and(tf.equal(raw[:-1], 0xFF), tf.equal(raw[1:], 0xDA)), tf.int32))


def refusal(data, max_pixels, max_bytes):
    """"" when `data` (scalar string) is a JPEG or PNG within both limits, else why it is refused."""
    raw, length = _bytes(data)
    is_png = _starts_with(raw, length, _PNG_SIGNATURE)
    png_found, png_height, png_width = png_size(raw, length)
    is_jpeg = _starts_with(raw, length, [0xFF, 0xD8, 0xFF])
    jpeg_found, jpeg_height, jpeg_width = jpeg_size(raw, length)
    scans = jpeg_scans(raw)
    height = tf.where(is_png, png_height, jpeg_height)
    width = tf.where(is_png, png_width, jpeg_width)
    declared = tf.strings.join([tf.strings.as_string(width), "x", tf.strings.as_string(height)])
    reasons = [
        (tf.cast(length, tf.int64) > max_bytes,
         tf.strings.join(["too large: ", tf.strings.as_string(length), " bytes, over the limit of ",
                          tf.strings.as_string(max_bytes), " set at export (--max_image_bytes)"])),
        (tf.logical_not(tf.logical_or(is_png, is_jpeg)), tf.constant("not an image: send JPEG or PNG bytes")),
        (tf.logical_and(is_png, tf.logical_not(png_found)),
         tf.constant("unreadable: the PNG has no IHDR header (truncated or corrupt)")),
        (tf.logical_and(is_jpeg, tf.logical_not(jpeg_found)),
         tf.constant("unreadable: the JPEG has no frame header (truncated or corrupt)")),
        (tf.logical_or(height <= 0, width <= 0), tf.strings.join(["unreadable: the image declares ", declared, " pixels"])),
        (height * width > max_pixels,
         tf.strings.join(["too large: the image declares ", declared, " pixels, over the limit of ",
                          tf.strings.as_string(max_pixels), " set at export (--max_image_pixels)"])),
        (tf.logical_and(is_jpeg, scans > MAX_JPEG_SCANS),
         tf.strings.join(["too large: a JPEG of ", tf.strings.as_string(scans), " scans, over the limit of ",
                          str(MAX_JPEG_SCANS), " (each scan is a pass over the whole image)"])),
    ]
    reason = tf.constant("")
    for condition, text in reversed(reasons):  # the first reason that holds wins
        reason = tf.where(condition, text, reason)
    return reason
