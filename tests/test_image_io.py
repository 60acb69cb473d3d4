"""Image intake: every input kind and mode becomes RGB uint8; bad input gets a clear ImageError."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import settings
from model.image_io import ImageError, array_to_rgb, decode_image, downscale, load_image, read_bytes


def _pattern(h: int = 30, w: int = 40) -> np.ndarray:
    """An asymmetric colour image, so rotations and flips are detectable."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=2).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (valid CRC), with a tiny body."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_rgb_array_passes_through_unchanged():
    img = _pattern()
    out = load_image(img)
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("shape", [(30, 40), (30, 40, 1)])
def test_gray_array_becomes_three_equal_channels(shape):
    gray = np.arange(30 * 40, dtype=np.uint8).reshape(shape)
    out = array_to_rgb(gray)
    assert out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out[:, :, 0], gray.reshape(30, 40))
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])


def test_rgba_array_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    out = array_to_rgb(rgba)
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[3, 0], [255, 255, 255])


def test_float_and_16bit_arrays_are_rescaled_not_clipped():
    ramp = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    assert array_to_rgb(ramp)[..., 0].max() == 255 and array_to_rgb(ramp)[..., 0].min() == 0
    wide = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    out = array_to_rgb(wide)[..., 0]
    assert out.max() == round(55000 / 257) and len(np.unique(out)) == 12


@pytest.mark.parametrize("bad", [np.zeros((5, 5, 2), np.uint8), np.zeros((2, 5, 5, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)])
def test_bad_arrays_are_refused(bad):
    with pytest.raises(ImageError):
        load_image(bad)


def test_nan_array_is_refused():
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan))


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "1", "I;16"])
def test_every_mode_decodes_to_rgb(mode):
    base = Image.fromarray(_pattern())
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
        assert image.mode.startswith("I;16")
        fmt = "PNG"
    else:
        image = base.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = load_image(_encode(image, fmt))
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    if mode in ("L", "I;16"):
        # Grayscale content is kept (a 16-bit image is rescaled, not clipped to white).
        np.testing.assert_allclose(out[..., 0], np.asarray(base.convert("L")), atol=1)
    if mode == "CMYK":
        np.testing.assert_allclose(out.astype(int), _pattern().astype(int), atol=40)


def test_png_and_jpeg_bytes_path_fileobj_and_pil_agree(tmp_path):
    img = _pattern()
    png = _encode(Image.fromarray(img), "PNG")
    path = tmp_path / "p.png"
    path.write_bytes(png)
    for source in (png, bytearray(png), memoryview(png), str(path), path, io.BytesIO(png), Image.fromarray(img)):
        np.testing.assert_array_equal(load_image(source), img)
    jpeg = load_image(_encode(Image.fromarray(img), "JPEG", quality=95))
    assert np.abs(jpeg.astype(int) - img.astype(int)).mean() < 4


@pytest.mark.parametrize("orientation, undo", [(3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_is_applied(orientation, undo):
    stored = _pattern(32, 48)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = load_image(_encode(Image.fromarray(stored), "PNG", exif=exif.tobytes()))
    expected = undo(stored)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_truncated_jpeg_is_a_clear_error():
    data = _encode(Image.fromarray(_pattern(200, 200)), "JPEG", quality=95)
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


@pytest.mark.parametrize("size", [(100_000, 100_000), (settings.MAX_IMAGE_SIDE + 1, 10), (9_000, 9_000)])
def test_huge_dimensions_are_refused_from_the_header(size):
    assert size[0] * size[1] > settings.MAX_IMAGE_PIXELS or max(size) > settings.MAX_IMAGE_SIDE
    with pytest.raises(ImageError, match="too large"):
        load_image(_png_header_only(*size))


def test_empty_missing_oversized_and_wrong_type_inputs():
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="no such file"):
        load_image("/nonexistent/photo.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(Path(__file__).parent)
    with pytest.raises(ImageError, match="larger than"):
        read_bytes(b"\0" * (settings.MAX_UPLOAD_MB * 1024 * 1024 + 1))
    with pytest.raises(ImageError, match="cannot read"):
        load_image(12345)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="binary"):
        load_image(io.StringIO("text"))  # type: ignore[arg-type]


def test_downscale_keeps_aspect_and_reports_factor():
    img = np.zeros((300, 1000, 3), np.uint8)
    small, factor = downscale(img, 500)
    assert small.shape == (150, 500, 3) and factor == pytest.approx(0.5)
    same, one = downscale(img, 1000)
    assert same is img and one == 1.0


def test_heic_photos_decode_with_exif_orientation_applied():
    """iPhone photos: HEIC (pillow-heif) decodes to RGB, and a rotated phone photo is turned upright."""
    from model.image_io import HEIF_SUPPORTED, IMAGE_FORMATS

    assert HEIF_SUPPORTED and {"heic", "heif"} <= set(IMAGE_FORMATS)
    pattern = _pattern(40, 60)
    data = _encode(Image.fromarray(pattern), "HEIF", quality=95)
    assert data[4:12] == b"ftypheic"
    rgb = load_image(data)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - pattern).mean() < 8  # lossy, but the same picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as phones store portraits
    rotated = load_image(_encode(Image.fromarray(pattern), "HEIF", quality=95, exif=exif.tobytes()))
    assert rotated.shape == (60, 40, 3)
    with pytest.raises(ImageError, match="truncated|damaged|not an image"):  # a clear message, not a traceback
        load_image(data[: len(data) // 3])


def test_one_format_list_for_uploader_and_cli(tmp_path):
    from model.image_io import IMAGE_FORMATS
    from model.predict import IMAGE_SUFFIXES, collect_paths
    from ui import photos

    assert photos.UPLOAD_TYPES == IMAGE_FORMATS
    assert IMAGE_SUFFIXES == tuple(f".{f}" for f in IMAGE_FORMATS)
    for name in ("a.HEIC", "b.heif", "c.gif", "d.tiff", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in collect_paths([str(tmp_path)])] == ["a.HEIC", "b.heif", "c.gif", "d.tiff"]


@pytest.mark.parametrize("size", [(15_000, 15_000), (10_000, 10_000)])
def test_an_image_over_pillows_pixel_limit_gets_the_apps_own_message(size):
    """Over Pillow's decompression-bomb limit (89 MP warns, 179 MP raises) the message gives the
    image's size and the app's limit, not Pillow's 'decompression bomb DOS attack' text."""
    from PIL import Image as PILImage

    assert size[0] * size[1] > PILImage.MAX_IMAGE_PIXELS  # Pillow itself refuses these in Image.open
    with pytest.raises(ImageError) as info:
        load_image(_png_header_only(*size))
    message = str(info.value)
    assert f"{size[0]}x{size[1]} px, {size[0] * size[1] / 1e6:.0f} megapixels" in message
    assert f"the limit is {settings.MAX_IMAGE_SIDE} px per side and {settings.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels" \
        in message
    assert "bomb" not in message.lower() and "DOS" not in message


@pytest.mark.parametrize("fmt, ext", [("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tiff")])
def test_multi_frame_files_give_their_first_frame_and_frame_count(fmt, ext, tmp_path):
    from model.image_io import read_image

    frames = [np.full((30, 40, 3), value, np.uint8) for value in (20, 120, 220)]
    path = tmp_path / f"anim.{ext}"
    Image.fromarray(frames[0]).save(path, format=fmt, save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    for source in (path, path.read_bytes(), Image.open(path)):
        decoded = read_image(source)
        assert decoded.frames == 3 and decoded.frame == 0
        assert abs(float(decoded.pixels.mean()) - 20) < 3  # the first frame, not a later one
    assert read_image(_encode(Image.fromarray(frames[1]), "PNG")).frames == 1
    assert read_image(frames[2]).frames == 1
