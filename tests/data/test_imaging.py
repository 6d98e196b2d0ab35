"""Reading every kind of file a chest X-ray folder holds into gray uint8, or a clear reason."""
import io

import numpy as np
import pytest
from PIL import Image

from cxr_fast.data import imaging


def _encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _gradient(width=300, height=200):
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    return (x[None, :] * (0.5 + 0.5 * y)).astype(np.uint8)


def test_gray_jpeg_is_squashed_to_square():
    gray = imaging.load_gray(_encode(Image.fromarray(_gradient()), "JPEG", quality=95), 64)
    assert gray.shape == (64, 64) and gray.dtype == np.uint8
    assert gray[:, -1].mean() > 150 > 20 > gray[:, 0].mean()  # the gradient survives


def test_full_resolution_keeps_size():
    gray = imaging.load_gray(_encode(Image.fromarray(_gradient()), "PNG"), 0)
    np.testing.assert_array_equal(gray, _gradient())


@pytest.mark.parametrize("mode", ["RGB", "CMYK", "RGBA", "P", "LA", "1"])
def test_color_modes_become_gray(mode):
    base = Image.fromarray(_gradient()).convert("RGB").convert(mode)
    fmt = "JPEG" if mode in ("RGB", "CMYK") else "PNG"
    gray = imaging.load_gray(_encode(base, fmt), 32)
    assert gray.shape == (32, 32) and gray.dtype == np.uint8
    if mode != "1":
        assert gray[:, -4:].mean() > gray[:, :4].mean() + 80


def test_16_bit_png_is_scaled_by_its_bit_depth():
    twelve_bit = (_gradient().astype(np.uint16) * 16)  # 0..4080: a 12-bit film in a 16-bit file
    data = _encode(Image.fromarray(twelve_bit), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    gray = imaging.load_gray(data, 0)
    np.testing.assert_allclose(gray.astype(int), _gradient().astype(int), atol=1)


def test_resize_is_antialiased():
    stripes = np.zeros((256, 256), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes alias to black or white without a prefilter
    gray = imaging.load_gray(_encode(Image.fromarray(stripes), "PNG"), 32)
    assert abs(gray.astype(float).mean() - 127.5) < 3 and gray.std() < 3


@pytest.mark.parametrize("data,code", [
    (b"", "unreadable"),
    (b"this is a text file, not an image", "unreadable"),
])
def test_unreadable_bytes_give_a_reason(data, code):
    with pytest.raises(imaging.ImageError, match=f"^{code}:"):
        imaging.load_gray(data, 32)


def test_truncated_jpeg_gives_a_reason():
    data = _encode(Image.fromarray(_gradient(600, 400)), "JPEG")
    with pytest.raises(imaging.ImageError, match="^truncated:"):
        imaging.load_gray(data[: len(data) // 2], 32)


def test_oversized_image_is_refused_from_its_header():
    data = _encode(Image.fromarray(_gradient(300, 200)), "PNG")
    with pytest.raises(imaging.ImageError, match="^too_large: 300x200"):
        imaging.load_gray(data, 32, max_pixels=50_000)


def test_decompression_bomb_header_is_refused_before_decoding():
    bomb = _encode(Image.new("1", (20_000, 20_000)), "PNG")  # 400 MP in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(imaging.ImageError, match="^too_large"):
        imaging.load_gray(bomb, 32)


@pytest.mark.parametrize("encoding", imaging.ENCODINGS)
def test_encode_round_trips(encoding):
    gray = _gradient(64, 64)
    data = imaging.encode(gray, encoding)
    if encoding == "raw":
        decoded = np.frombuffer(data, np.uint8).reshape(64, 64)
    else:
        decoded = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_allclose(decoded.astype(int), gray.astype(int), atol=0 if encoding != "jpeg" else 4)


def test_worker_functions_report_instead_of_raising(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(_encode(Image.fromarray(_gradient()), "PNG"))
    empty = tmp_path / "empty.jpeg"
    empty.write_bytes(b"")
    sha1, reason = imaging.fingerprint((str(good), imaging.DEFAULT_MAX_PIXELS))
    assert len(sha1) == 40 and reason is None
    assert imaging.fingerprint((str(empty), imaging.DEFAULT_MAX_PIXELS))[1].startswith("unreadable")
    assert imaging.fingerprint((str(tmp_path / "missing.png"), 100))[1].startswith("unreadable")
    encoded, height, width = imaging.prepare((str(good), 16, "raw", 95, imaging.DEFAULT_MAX_PIXELS))
    assert (len(encoded), height, width) == (256, 16, 16)
    assert imaging.prepare((str(empty), 16, "raw", 95, 100)).startswith("unreadable")


def test_a_progressive_jpeg_of_too_many_scans_is_refused_before_decoding():
    from hostile import progressive_jpeg

    assert imaging.load_gray(progressive_jpeg(64), 32).shape == (32, 32)
    with pytest.raises(imaging.ImageError, match="too_large: a JPEG of 20000 scans, over the limit of 64"):
        imaging.load_gray(progressive_jpeg(20000, 2048, 2048), 32)  # 33 s of decoding here, unchecked


def test_files_are_read_only_when_regular_and_no_further_than_the_limit(tmp_path):
    import os

    fifo = tmp_path / "pipe.jpeg"
    os.mkfifo(fifo)  # opened plainly, a FIFO blocks until someone writes to it: a hang
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")  # read plainly: an endless read
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as f:
        f.truncate(2 * 10**6 + (16 << 20) + 1)  # one byte past the limit at 1 MP, no disk used
    for path, reason in ((fifo, "unreadable: not a regular file"), (zero, "unreadable: not a regular file"),
                         (sparse, "too_large: over 18777216 bytes"), (tmp_path / "none.png", "unreadable: No such")):
        with pytest.raises(imaging.ImageError, match=reason):
            imaging.read(str(path), max_pixels=10**6)
    good = tmp_path / "good.png"
    good.write_bytes(_encode(Image.fromarray(_gradient()), "PNG"))
    assert imaging.read(str(good), max_pixels=10**6) == good.read_bytes()
