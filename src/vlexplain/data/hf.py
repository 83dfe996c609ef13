"""Hugging Face ``datasets`` saved with ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InputError, MissingExtraError
from .rows import PairRow, expand, is_url, refuse_url, resolve


def load_hf(pd: Any):
    """The saved dataset of a ``PairDataset``, its split chosen."""
    try:
        import datasets
    except ImportError:
        raise MissingExtraError(
            f"{pd.path} is a saved Hugging Face dataset; reading it needs the 'datasets' package: pip install datasets"
        ) from None
    obj = datasets.load_from_disk(str(pd.path))
    if isinstance(obj, datasets.DatasetDict):
        splits = list(obj.keys())
        split = pd.requested_split or (splits[0] if len(splits) == 1 else "test")
        if split not in obj:
            raise InputError(f"{pd.path}: no split {split!r}; splits: {', '.join(splits)} (pass --split NAME)")
        obj = obj[split]
        pd.split = split
    elif pd.requested_split not in (None, "all"):
        raise InputError(
            f"--split {pd.requested_split}: {pd.path} is a single saved Dataset without splits; leave --split out"
        )
    return obj


def hf_rows(pd: Any, ds: Any) -> Iterator[PairRow]:
    cols = pd.columns.resolve(list(ds.column_names), str(pd.path))
    feature = ds.features.get(cols.image)
    if getattr(feature, "decode", False) and type(feature).__name__ == "Image":
        import datasets

        # rows carry the encoded bytes / path; the image is decoded only when its pair is loaded
        ds = ds.cast_column(cols.image, datasets.Image(decode=False))
    base = pd.path

    def image(img: Any, where: str) -> Any:
        if isinstance(img, str):
            if is_url(img):
                refuse_url(img, where)
            return resolve(img, base, where)
        if isinstance(img, dict) and img.get("bytes") is not None:
            return bytes(img["bytes"])
        if isinstance(img, dict) and img.get("path"):
            return resolve(img["path"], base, where)
        return img  # a decoded PIL image

    def records() -> Iterator[tuple[dict[str, Any], str]]:
        for i in range(len(ds)):
            yield ds[i], f"{pd.path}[{i}]"

    yield from expand(records(), cols, pd.captions, base, image=image)
