"""Image intake: anything a user can upload -> an HxWx3 uint8 RGB array, or a clear error.

Accepts a path, bytes, a binary file object (e.g. a Streamlit upload), a PIL image
or a numpy array, in any of :data:`IMAGE_FORMATS` (HEIC/HEIF through pillow-heif). Sizes are checked from the header before any pixel is decoded,
so a decompression bomb is refused cheaply. EXIF orientation is applied (phones
store portraits sideways), and every mode a photo comes in — grayscale, RGBA,
palette, CMYK, 16-bit — becomes RGB. Nothing is written to disk or logged.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.settings import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_UPLOAD_MB

ImageSource = str | Path | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray

#: The one list of image formats the app's uploader, the API and the CLI accept (file
#: suffixes, lower case, without the dot). HEIC/HEIF is the iPhone's default.
IMAGE_FORMATS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "heic", "heif")
#: The same as file suffixes (".jpg", ...): what the CLI and the data layer pick up in a folder.
IMAGE_SUFFIXES: tuple[str, ...] = tuple(f".{fmt}" for fmt in IMAGE_FORMATS)
#: The formats for people to read: "JPG, PNG, WEBP, BMP, GIF, TIFF, HEIC" (one name per format).
FORMAT_NAMES: str = ", ".join(fmt.upper() for fmt in IMAGE_FORMATS if fmt not in ("jpeg", "tif", "heif"))


def _register_heif() -> bool:
    """Teach Pillow to read HEIC/HEIF (pillow-heif, a requirement); False when it is missing."""
    try:
        import pillow_heif
    except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
        return False
    pillow_heif.register_heif_opener()
    return True


HEIF_SUPPORTED: bool = _register_heif()


class ImageError(ValueError):
    """The input is not a usable image; the message is meant for the user."""


@dataclass(frozen=True)
class DecodedImage:
    """A decoded photo and how many frames its file holds (animated GIF/WebP, multi-page TIFF).

    Only the first frame is decoded and analysed: ``frame`` is its index (0), ``frames``
    the file's count, so the app and the CLI can say which frame they looked at.
    """

    pixels: np.ndarray  # HxWx3 uint8 RGB, EXIF orientation applied
    frames: int = 1
    frame: int = 0


def _too_large(width: int, height: int) -> ImageError:
    return ImageError(
        f"the image is too large ({width}x{height} px, {width * height / 1e6:.0f} megapixels); the limit is "
        f"{MAX_IMAGE_SIDE} px per side and {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels"
    )


def _check_dimensions(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise _too_large(width, height)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the file's header, without Pillow's decompression-bomb check.

    ``Image.open`` refuses images over ``Image.MAX_IMAGE_PIXELS`` before it returns, so
    the size is read here by the format plugin alone (its constructor parses the header
    and decodes no pixel). None when no plugin accepts the file.
    """
    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            if accept is not None and not accept(prefix):
                continue
            return factory(io.BytesIO(data)).size
        except Exception:  # noqa: BLE001 - a plugin that cannot parse the header is not the one
            continue
    return None


def _bomb_error(data: bytes, exc: Exception) -> ImageError:
    """The app's own words for an image over Pillow's pixel limit: its size and our limit."""
    size = _header_size(data)
    if size is not None and size[0] > 0 and size[1] > 0:
        return _too_large(*size)
    pixels = re.search(r"\((\d+) pixels\)", str(exc))
    count = f" ({int(pixels.group(1)) / 1e6:.0f} megapixels)" if pixels else ""
    return ImageError(f"the image is too large{count}; the limit is {MAX_IMAGE_SIDE} px per side and "
                      f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels")


def read_bytes(source: str | Path | bytes | bytearray | memoryview | IO[bytes]) -> bytes:
    """The raw bytes of a path, a bytes-like object or a binary file object (size-capped)."""
    limit = MAX_UPLOAD_MB * 1024 * 1024
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            raise ImageError(f"{path} is a folder, not an image file")
        if not path.is_file():
            raise ImageError(f"no such file: {path}")
        try:
            if path.stat().st_size > limit:
                raise ImageError(f"the file is larger than {MAX_UPLOAD_MB} MB")
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"could not read {path} ({exc.strerror or exc})") from None
    elif hasattr(source, "read"):
        if hasattr(source, "seek"):
            source.seek(0)
        data = source.read(limit + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError("the file object must be opened in binary mode")
        data = bytes(data)
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    if not data:
        raise ImageError("the file is empty")
    if len(data) > limit:
        raise ImageError(f"the file is larger than {MAX_UPLOAD_MB} MB")
    return data


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> HxWx3 uint8 RGB with EXIF orientation applied (the first frame)."""
    return decode_frames(data).pixels


def decode_frames(data: bytes) -> DecodedImage:
    """Encoded image bytes -> the first frame as RGB, and the number of frames in the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            # The header alone gives the size: refuse before decoding any pixel.
            _check_dimensions(*image.size)
            image.load()
            frames = _frame_count(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(data, exc) from None
    except UnidentifiedImageError:
        raise ImageError(f"the file is not an image, or not in a format this app reads ({FORMAT_NAMES})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc)
        if "truncated" in message.lower() or isinstance(exc, EOFError):
            raise ImageError("the image file is truncated or damaged") from None
        raise ImageError(f"the image file is damaged or could not be decoded ({message})") from None
    return DecodedImage(pil_to_rgb(image), frames=frames)


def _frame_count(image: Image.Image) -> int:
    """Frames in an opened image (1 for a still); counting never fails the photo.

    Counting a GIF's frames walks the file; Pillow leaves the image on frame 0 after it.
    """
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - a damaged later frame: the first one was read fine
        return 1


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image in any mode -> HxWx3 uint8 RGB, EXIF orientation applied."""
    _check_dimensions(*image.size)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
        pass
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return array_to_rgb(np.asarray(image))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.ascontiguousarray(np.asarray(image))


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 array (uint8, 16-bit or float 0..1) -> HxWx3 uint8 RGB.

    3-channel arrays are taken as RGB (not OpenCV's BGR); 4 channels as RGBA,
    composited on white.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"expected an HxW or HxWx3 image array, got shape {arr.shape}")
    _check_dimensions(arr.shape[1], arr.shape[0])
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        rgb = arr[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("the image array holds NaN or infinite values")
        peak = float(arr.max()) if arr.size else 0.0
        scaled = arr * 255.0 if peak <= 1.0 else arr
        return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
    if arr.dtype == np.uint16:
        return np.clip(arr.astype(np.float64) / 257.0 + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        peak = int(arr.max()) if arr.size else 0
        # Mode "I" holding 16-bit values (some 16-bit PNGs) is rescaled, not clipped.
        if peak > 255:
            return np.clip(arr.astype(np.float64) / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise ImageError(f"unsupported image array type {arr.dtype}")


def load_image(source: ImageSource) -> np.ndarray:
    """Any supported input -> HxWx3 uint8 RGB (EXIF applied). Raises :class:`ImageError`."""
    return read_image(source).pixels


def read_image(source: ImageSource) -> DecodedImage:
    """Any supported input -> its first frame as RGB and the number of frames it holds."""
    if isinstance(source, np.ndarray):
        return DecodedImage(array_to_rgb(source))
    if isinstance(source, Image.Image):
        try:
            return DecodedImage(pil_to_rgb(source), frames=_frame_count(source))
        except ImageError:
            raise
        except (OSError, ValueError) as exc:
            raise ImageError(f"the image could not be decoded ({exc})") from None
    return decode_frames(read_bytes(source))


def downscale(photo: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink so the longer side is at most ``max_side`` (INTER_AREA); returns (image, factor<=1)."""
    h, w = photo.shape[:2]
    if max(h, w) <= max_side:
        return photo, 1.0
    factor = max_side / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_AREA), size[0] / w
