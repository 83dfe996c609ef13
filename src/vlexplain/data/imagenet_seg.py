"""ImageNet-Segmentation (Guillaumin et al. 2014): ``gtsegs_ijcv.mat``, 4 276 images with masks.

The file is MATLAB v7.3 (HDF5). ``/value/img`` is an (N, 1) array of references, each to a
uint8 array stored column-major, (3, W, H); ``/value/gt`` is an (N, 1) array of references to 1x1
cells whose one reference points to the (W, H) mask (1 = object, 0 = background). Images and masks
are read as the Chefer et al. / TextSpan / LeGrad evaluation code reads them: transposed to (H, W, 3)
and (H, W). Needs ``h5py`` (the ``eval`` extra).

Example:
    >>> ds = ImageNetSegmentation("gtsegs_ijcv.mat")   # doctest: +SKIP
    >>> image, mask = ds[0]                            # PIL RGB image, (H, W) bool array
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError, require

FILE_NAME = "gtsegs_ijcv.mat"


def find_mat(path: str | os.PathLike) -> Path:
    """``path`` itself or ``path/gtsegs_ijcv.mat``; a one-line error when neither exists."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / FILE_NAME
    if not p.is_file():
        raise InputError(f"ImageNet-Segmentation: {p} not found (give the {FILE_NAME} file or its folder with --data)")
    return p


class ImageNetSegmentation:
    """Random access to the images and masks of ``gtsegs_ijcv.mat`` (opened lazily, per process)."""

    def __init__(self, path: str | os.PathLike):
        self.path = find_mat(path)
        h5py = require("h5py", "eval")
        try:
            with h5py.File(self.path, "r") as f:
                imgs, gts = f.get("/value/img"), f.get("/value/gt")
                if imgs is None or gts is None:
                    raise InputError(
                        f"{self.path}: not the ImageNet-Segmentation file (no /value/img and /value/gt references)"
                    )
                if imgs.ndim != 2 or gts.shape[:1] != imgs.shape[:1] or imgs.shape[0] == 0:
                    raise InputError(
                        f"{self.path}: /value/img {imgs.shape} and /value/gt {gts.shape} do not list the same images"
                    )
                self.n = int(imgs.shape[0])
        except OSError as e:
            raise InputError(f"{self.path}: not a MATLAB v7.3 (HDF5) file ({e})") from None
        self._f: Any = None

    def __len__(self) -> int:
        return self.n

    def describe(self) -> dict[str, Any]:
        st = self.path.stat()
        return {"kind": "imagenet-seg", "path": str(self.path.resolve()), "n": self.n, "bytes": st.st_size}

    def _file(self) -> Any:
        if self._f is None:
            self._f = require("h5py", "eval").File(self.path, "r")
        return self._f

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        """Image ``i`` (RGB) and its (H, W) bool object mask."""
        f = self._file()
        try:
            img = np.asarray(f[f["/value/img"][i, 0]]).transpose((2, 1, 0))
            gt = np.asarray(f[f[f["/value/gt"][i, 0]][0, 0]]).transpose((1, 0))
        except (KeyError, ValueError, TypeError, OSError) as e:
            raise InputError(f"{self.path}: image {i} cannot be read ({e})") from None
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f"{self.path}: image {i} is {img.dtype} {img.shape}, expected uint8 (H, W, 3)")
        if gt.shape != img.shape[:2]:
            raise InputError(f"{self.path}: mask {i} is {gt.shape}, image {i} is {img.shape[:2]}")
        return Image.fromarray(np.ascontiguousarray(img)).convert("RGB"), gt > 0
