"""Opening and preprocessing images safely."""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

ImageLike = str | os.PathLike | Image.Image | torch.Tensor | np.ndarray

#: the most pixels an image (or mask) may have: our own decompression-bomb limit, checked from the
#: file's header before any pixel is decoded (89 M pixels, Pillow's default warning threshold)
MAX_PIXELS = 89_478_485
#: the most pixels an image may have after preprocessing resizes its shortest side to the model's
#: input size (before the centre crop): 16 M pixels, about 64 MB while resizing. A thin image
#: (a 5000 x 1 strip) is small on disk and as decoded, but resized to a 224-pixel short side it
#: would take 1.1 M x 224 pixels (about 1 GB).
MAX_RESIZED_PIXELS = 16 * 2**20
#: warn when the centre crop keeps less than this share of the resized image
CROP_WARN_SHARE = 0.5


def open_image(source: str | os.PathLike | bytes, what: str = "image", where: str = "") -> Image.Image:
    """Decode an image file (or encoded bytes) as it is stored: the one reader of images and masks.

    The file goes through ``vlexplain.files.check_input_file`` first (missing, link loop, FIFO,
    empty...); its size is read from the header and refused above ``MAX_PIXELS`` before any pixel
    is decoded. Raises [`InputError`][vlexplain.InputError] with a one-line message.

    Args:
        source: a path, or the encoded bytes of an image.
        what: the word for it in messages ("image", "mask").
        where: where the bytes come from (a data file's ``file:line``), for messages about bytes.
    """
    from .files import check_input_file, shown_name

    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise InputError(f"{where}: the {what} is empty (0 bytes)")
        fp: Any = io.BytesIO(bytes(source))
        name = where or what
    else:
        fp = check_input_file(source, what)
        name = shown_name(fp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            im = Image.open(fp)
        try:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise InputError(
                    f"{what} is too large (decompression-bomb guard: {w}x{h} = {w * h:,} pixels, "
                    f"the limit is {MAX_PIXELS:,}): {name}"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
        except BaseException:
            im.close()
            raise
        return im
    except Image.DecompressionBombError:
        raise InputError(f"{what} is too large (decompression-bomb guard, > {MAX_PIXELS:,} pixels): {name}") from None
    except UnidentifiedImageError:
        raise InputError(f"not an image file (or an unsupported format): {name}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"cannot read {what} {name}: {e} (truncated or corrupt file?)") from None


def image_size(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file, read from its header (no pixel decoded), guarded like ``open_image``."""
    from .files import check_input_file, shown_name

    p = check_input_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                return im.size
    except Image.DecompressionBombError:
        raise InputError(
            f"{what} is too large (decompression-bomb guard, > {MAX_PIXELS:,} pixels): {shown_name(p)}"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read {what} {shown_name(p)}: {e}") from None


def load_image(source: str | os.PathLike | Image.Image) -> Image.Image:
    """Open an image as 8-bit RGB.

    Handles EXIF rotation, CMYK, 16-bit, greyscale, palette and RGBA (composited on white). Raises
    [`InputError`][vlexplain.InputError] with a one-line message for missing, empty, truncated or non-image files, for
    what is not a regular file (a FIFO, a link loop) and for decompression bombs (``open_image``).
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    with open_image(source) as im:
        return to_rgb(im)


def load_mask(source: str | os.PathLike | bytes | Image.Image, where: str = "") -> Image.Image:
    """A ground-truth mask as an 8-bit greyscale image, read like images (``open_image``)."""
    if isinstance(source, Image.Image):
        return source.convert("L")
    with open_image(source, "mask", where) as im:
        return im.convert("L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image -> upright 8-bit RGB."""
    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        im = Image.fromarray(a.astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def resized_size(image_size: tuple[int, int], input_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an image of ``image_size`` (width, height) once its shortest side is
    resized to ``min(input_size)``, as CLIP preprocessing does before its centre crop."""
    w, h = image_size
    s = min(input_size)
    if w <= h:
        return s, int(s * h / w)
    return int(s * w / h), s


def check_image_size(
    image: Image.Image | tuple[int, int], input_size: tuple[int, int], name: str = "", warn: bool = True
) -> None:
    """Refuse an image whose preprocessing would allocate too much; warn when the crop drops most of it.

    Checked before anything is resized. ``image`` is a Pillow image or its (width, height),
    ``input_size`` the model's (H, W). Raises [`InputError`][vlexplain.InputError] saying how to fix the image
    (crop it).
    """
    w, h = image.size if isinstance(image, Image.Image) else image
    what = f"image {name}" if name else "image"
    if w < 1 or h < 1:
        raise InputError(f"{what} has no pixels ({w}x{h})")
    rw, rh = resized_size((w, h), input_size)
    if rw * rh > MAX_RESIZED_PIXELS:
        ratio = MAX_RESIZED_PIXELS // (min(input_size) ** 2)
        raise InputError(
            f"{what} is too elongated ({w}x{h} pixels): resizing its short side to {min(input_size)} pixels would "
            f"make it {rw}x{rh} ({rw * rh:,} pixels, the limit is {MAX_RESIZED_PIXELS:,}); crop it to the part "
            f"you want explained, at most {ratio}:1"
        )
    kept = min(1.0, input_size[0] / rh) * min(1.0, input_size[1] / rw)
    if warn and kept < CROP_WARN_SHARE:
        warnings.warn(
            f"{what} ({w}x{h} pixels) is much longer on one side: the model sees only its centre "
            f"{100 * kept:.3g} % (crop it to the part you want explained)",
            stacklevel=3,
        )


def default_preprocess(
    image: Image.Image, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """CLIP preprocessing: bicubic resize of the shortest side, centre crop, normalise -> (3, H, W).

    Images whose resize would be too large are refused first (``check_image_size``).
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    check_image_size(image, size)
    image = to_rgb(image)
    image = F.resize(image, min(size), interpolation=InterpolationMode.BICUBIC, antialias=True)
    image = F.center_crop(image, list(size))
    t = F.to_tensor(image)
    return F.normalize(t, mean, std)


def denormalize(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Preprocessed (..., 3, H, W) pixels -> RGB in [0, 1] for display (the inverse of the model's
    normalisation, on the pixels' device and dtype)."""
    m = torch.tensor(mean, device=pixels.device, dtype=pixels.dtype).view(3, 1, 1)
    s = torch.tensor(std, device=pixels.device, dtype=pixels.dtype).view(3, 1, 1)
    return (pixels * s + m).clamp(0, 1)
