"""Decode any image file a user is likely to have into upright 8-bit RGB, or say why not.

Shared by every place that reads images (dataset scan, cache build, fastai items, the light
predictor, review), so one file gets one verdict everywhere. Imports no torch: the light
predictor depends on it.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .png .gif .bmp .webp .tif .tiff .ppm .pgm .pbm .jfif".split()
)


# Pillow's own decompression-bomb threshold (about 89.5 megapixels); anything larger is refused
# from its header, before a single pixel is decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


# Set once for the process, not per call: warnings.catch_warnings is not thread-safe, and files are
# decoded in worker threads. Over-limit images are refused below with their size, not warned about.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Pillow's complaints about a broken file ("Corrupt EXIF data", ...): the file gets its verdict (decoded,
# or a listed skip with the reason); a warning on stderr per file would only bury the output.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class BadImage(Exception):
    """The file cannot be used as an image; `str(exc)` is the reason, for a skip list."""


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_file(path: Path) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadImage("symlink loop") from None
        if e.errno == errno.ENOENT:
            raise BadImage("missing (dangling symlink or removed)") from None
        raise BadImage(f"cannot stat: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadImage("not a regular file (a FIFO, socket or device)")  # reading a FIFO would block
    if st.st_size == 0:
        raise BadImage("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise BadImage("permission denied")


def first_words(e: BaseException, limit: int = 120) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit] or type(e).__name__


BIT_DEPTHS = (8, 10, 12, 14, 16)  # what cameras, scanners and medical images store in 16-bit files


def bit_depth(max_value: int) -> int:
    """The smallest usual bit depth that holds `max_value`: a 12-bit sensor's data in a 16-bit file
    (largest value 4095) is scaled as 12-bit, not divided by 257 into near-black."""
    return next((b for b in BIT_DEPTHS if max_value < 2**b), max(16, int(max_value).bit_length()))


def _to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit integer and float images: scaled to 0..255 from their bit depth (inferred from the
    largest value), instead of clipped (Pillow clips); float images from their range."""
    a = np.asarray(im)
    if im.mode == "F":
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = (a - lo) / (hi - lo or 1.0) * 255.0
    else:
        a = a.astype(np.float64) * (255.0 / (2 ** bit_depth(int(a.max(initial=0))) - 1))
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _flatten_alpha(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB the way a viewer shows it (transparent areas on white)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = _to_8bit(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        return _flatten_alpha(im)
    return im if im.mode == "RGB" else im.convert("RGB")


def open_rgb(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Open, check and decode `path` to upright RGB; raise BadImage(reason) if it cannot be.

    `min_size`: when given and the image is at least 4x larger, JPEG decoding is done at a
    reduced scale (libjpeg DCT scaling), which makes huge photos cheap to shrink.
    """
    path = Path(path)
    _check_file(path)
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise BadImage(f"too large: {e}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except PermissionError:
        raise BadImage("permission denied") from None
    except Exception as e:  # OSError, and whatever else a broken file makes Pillow raise (ValueError for
        # a zTXt chunk that inflates past its limit, TypeError, EOFError, struct.error): one verdict, a skip
        if "truncat" in str(e).lower():
            raise BadImage("truncated file") from None
        raise BadImage(f"cannot open: {first_words(e)}") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise BadImage(
            f"too large: {w}x{h} = {w * h / 1e6:.1f} MP, over the "
            f"{MAX_PIXELS / 1e6:.1f} MP decompression-bomb limit"
        )
    if w == 0 or h == 0:
        raise BadImage(f"empty image ({w}x{h})")
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animated GIF/PNG/WebP: the first frame
        if min_size and im.format == "JPEG" and min(w, h) >= 4 * min_size:
            im.draft("RGB", (min_size * 2, min_size * 2))
        im.load()
        im = ImageOps.exif_transpose(im)
        return to_rgb(im)
    except Exception as e:  # any failure to decode is this file's verdict, never the whole command's
        if "truncat" in str(e).lower():
            raise BadImage("truncated file") from None
        raise BadImage(f"corrupt image: {first_words(e)}") from None


def center_crop_resize(im: Image.Image, size: int) -> Image.Image:
    """fastai's validation `Resize(size)` (method crop, centred, bilinear), on a PIL image."""
    w, h = im.size
    m = min(w / size, h / size)
    cw, ch = int(m * size), int(m * size)
    left, top = int(0.5 * (w - cw)), int(0.5 * (h - ch))
    if (cw, ch) != (w, h):
        im = im.crop((left, top, left + cw, top + ch))
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return im


PAD_PRESHRINK = 4  # pad_resize first shrinks an image whose long side is over this many times the size


def pad_resize(im: Image.Image, size: int) -> Image.Image:
    """fastai's `Resize(size, method='pad', pad_mode='zeros')`: padded to a square with black
    (centred), then resized: the whole image is kept. An image whose long side is over
    PAD_PRESHRINK x `size` is shrunk to that first (antialiased), so the square is never huge: a
    20000 x 1000 image would otherwise be a 1.2 GB canvas; smaller ones are fastai's exactly."""
    w, h = im.size
    if max(w, h) > PAD_PRESHRINK * size:
        f = PAD_PRESHRINK * size / max(w, h)
        im = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
        w, h = im.size
    side = max(w, h)
    if (w, h) != (side, side):
        square = Image.new("RGB", (side, side))
        square.paste(im, (int(0.5 * (side - w)), int(0.5 * (side - h))))
        im = square
    return im.resize((size, size), Image.BILINEAR) if im.size != (size, size) else im


def squish_resize(im: Image.Image, size: int) -> Image.Image:
    """fastai's `Resize(size, method='squish')`: the whole image, stretched to a square."""
    return im.resize((size, size), Image.BILINEAR) if im.size != (size, size) else im


RESIZE = {"crop": center_crop_resize, "squish": squish_resize, "pad": pad_resize}  # fastai's ResizeMethod


def resize_square(im: Image.Image, size: int, method: str = "crop") -> Image.Image:
    """An RGB image to `size` x `size` the way training's validation and the bundle see it."""
    return RESIZE[method](im, size)


def load_square(path: str | Path, size: int, method: str = "crop") -> np.ndarray:
    """RGB uint8 array of shape (size, size, 3), as the model sees the file; BadImage if not."""
    return np.asarray(resize_square(open_rgb(path, min_size=size), size, method))


JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jfif")


def needs_pil(path: str | Path) -> bool:
    """True unless `path` is a plain JPEG that nvJPEG decodes as PIL does: RGB or grayscale, no
    EXIF rotation (nvJPEG ignores it and mis-decodes CMYK/YCCK). Reads the header only."""
    if not str(path).lower().endswith(JPEG_EXTENSIONS):
        return True
    try:
        with Image.open(path) as im:
            return im.format != "JPEG" or im.mode not in ("RGB", "L") or im.getexif().get(0x0112, 1) != 1
    except Exception:  # let the PIL path give its verdict
        return True


def read_header(path: str | Path) -> tuple[str, int]:
    """(Pillow mode, shorter side) from the file's header, nothing decoded; BadImage for what the
    header already shows (not a file, not an image, over the size limit). What only a full decode
    finds (a truncated or corrupt body) is found where the pixels are decoded (the decoded cache)."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            w, h, mode = *im.size, im.mode
    except Image.DecompressionBombError as e:
        raise BadImage(f"too large: {e}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except Exception as e:
        raise BadImage(f"cannot open: {first_words(e)}") from None
    if w * h > MAX_PIXELS:
        raise BadImage(f"too large: {w}x{h} = {w * h / 1e6:.1f} MP, over the {MAX_PIXELS / 1e6:.1f} MP "
                       "decompression-bomb limit")
    if w == 0 or h == 0:
        raise BadImage(f"empty image ({w}x{h})")
    return mode, min(w, h)


def check_image(path: str | Path) -> str | None:
    """None when `path` decodes, else the reason it does not."""
    try:
        open_rgb(path)
    except BadImage as e:
        return str(e)
    return None
