"""Opening and preprocessing images safely."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

ImageLike = Union[str, os.PathLike, Image.Image, torch.Tensor, np.ndarray]

# Pillow's decompression-bomb guard stays on; 89 M pixels (Pillow's default) is the limit.
MAX_PIXELS = 89_478_485


def load_image(source: str | os.PathLike | Image.Image) -> Image.Image:
    """Open an image as 8-bit RGB.

    Handles EXIF rotation, CMYK, 16-bit, greyscale, palette and RGBA (composited on white). Raises
    :class:`InputError` with a one-line message for missing, empty, truncated or non-image files and
    for decompression bombs.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    path = Path(source)
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"image file is empty: {path}")
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"image is too large (decompression-bomb guard, > {MAX_PIXELS} pixels): {path}") from None
    except UnidentifiedImageError:
        raise InputError(f"not an image file (or an unsupported format): {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read image {path}: {e} (truncated or corrupt file?)") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


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


def default_preprocess(
    image: Image.Image, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """CLIP preprocessing: bicubic resize of the shortest side, centre crop, normalise -> (3, H, W)."""
    from torchvision.transforms import functional as F
    from torchvision.transforms import InterpolationMode

    image = to_rgb(image)
    image = F.resize(image, min(size), interpolation=InterpolationMode.BICUBIC, antialias=True)
    image = F.center_crop(image, list(size))
    t = F.to_tensor(image)
    return F.normalize(t, mean, std)
