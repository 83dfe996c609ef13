"""Image-caption pair datasets read lazily from the layouts CLIP users store them in.

Accepted sources (see ``open_pairs``; the README has a table with the command for each):

* ``*.jsonl``: one JSON object per line with an image path and a caption (optional ``boxes``:
  COCO ``[x, y, w, h]`` boxes in pixels of the original image, optional ``mask``: a PNG path).
* ``*.csv`` / ``*.tsv`` with a header row (``image``/``caption``, OpenCLIP's ``filepath``/``title``,
  ``url``/``caption``, ``image``/``text``, or any columns named with ``image_key`` / ``caption_key``),
  or without one: ``caption<TAB>image`` (Conceptual Captions) or ``image<TAB>caption`` per line.
* a folder of images with ``captions.jsonl``, ``captions.csv``, ``captions.tsv`` or
  ``captions.txt`` (``file<TAB>caption`` per line, or a CSV with a header).
* COCO: a ``captions_*.json`` annotation file with ``images`` (the image folder) and optionally
  ``instances`` (``instances_*.json``: boxes or segmentation masks as ground truth).
* webdataset shards: a ``.tar`` file, a folder of them, or a brace pattern
  (``shards/{00000..00009}.tar``); each sample is a ``jpg``/``png``/``webp`` with a ``txt`` or
  ``json`` caption, as OpenCLIP and img2dataset write them.
* Parquet: a ``.parquet`` file or a folder of them (image bytes, HF image structs or paths, and a
  caption column); needs pyarrow (the ``eval`` extra).
* a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (needs ``pip install datasets``).

Folders holding ``train`` / ``val`` / ``test`` sub-folders (or Parquet files named
``<split>-*.parquet``) and saved ``DatasetDict`` s have splits: ``split`` picks one. A caption field
holding a list of captions gives its first caption, or with ``all_captions`` one pair per caption
(``PairDataset.notes`` says so). URLs are refused with one line: nothing is downloaded.

Relative image paths are resolved against the folder of the data file. Iteration is streaming:
``PairDataset.rows`` parses text only, ``PairDataset.load`` opens one image. A malformed
line raises [`InputError`][vlexplain.errors.InputError] naming the file and line; a missing or corrupt
image makes ``PairDataset.load`` return a ``Pair`` with ``error`` set instead of raising.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from ..errors import InputError
from ..images import load_image
from .rows import Captions, Columns, LazyBytes, MissingImage, Pair, PairRow, is_url, open_bytes, refuse_url

__all__ = ["Pair", "PairRow", "PairDataset", "open_pairs", "detect_format", "FORMATS"]

Format = Literal["jsonl", "csv", "tsv", "cc_tsv", "folder", "hf", "coco", "webdataset", "parquet"]
FORMATS = ("jsonl", "csv", "tsv", "folder", "hf", "coco", "webdataset", "parquet")

#: caption files looked for, in this order, inside an image folder
FOLDER_CAPTION_FILES = ("captions.jsonl", "captions.csv", "captions.tsv", "captions.txt")
#: folder names holding one split of a dataset each
SPLIT_DIRS = ("train", "training", "val", "valid", "validation", "test", "testing")
BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")

#: data-file suffix -> format
_SUFFIX_KINDS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tar": "webdataset",
    ".parquet": "parquet",
}


class PairDataset:
    """A lazily read collection of image-caption pairs.

    Args:
        source: the data file, folder, saved dataset or shard pattern.
        format: one of ``FORMATS``; detected from the path when None.
        split: for sources with splits (saved ``DatasetDict``, split folders, ``<split>-*.parquet``),
            which split (default: the only one, else "test").
        image_key / caption_key: the image and caption columns (default: the known names, see
            ``IMAGE_KEYS``); box_key / mask_key: the ground-truth columns
            (default ``boxes`` / ``mask`` when present).
        all_captions: a list of captions gives one pair per caption (default: its first caption).
        images: COCO: the image folder (default: ``../<name>`` for ``captions_<name>.json``).
        instances: COCO: an ``instances_*.json`` file whose boxes / masks are the ground truth.
        coco_ground_truth: COCO: "boxes" or "masks" (segmentations).
        coco_match: COCO: "caption" (the categories the caption names) or "all" (every object).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        format: Format | None = None,
        split: str | None = None,
        image_key: str | None = None,
        caption_key: str | None = None,
        box_key: str | None = None,
        mask_key: str | None = None,
        all_captions: bool = False,
        images: str | os.PathLike | None = None,
        instances: str | os.PathLike | None = None,
        coco_ground_truth: str = "boxes",
        coco_match: str = "caption",
    ):
        if is_url(str(source)):
            refuse_url(str(source), "--data", "the data")
        self.path = Path(source).expanduser()
        self.format: Format = format or detect_format(self.path)
        if self.format == "cc_tsv":
            self.format = "tsv"
        if self.format not in FORMATS:
            raise InputError(f"unknown data format {self.format!r}; use one of {', '.join(FORMATS)}")
        if not self.path.exists() and not (self.format == "webdataset" and BRACE.search(str(self.path))):
            raise InputError(f"data not found: {self.path}")
        self.requested_split = split
        self.columns = Columns(image_key, caption_key, box_key, mask_key)
        self.all_captions = all_captions
        self.captions = Captions(all_captions)
        self.images, self.instances = images, instances
        self.coco_ground_truth, self.coco_match = coco_ground_truth, coco_match
        self.notes: list[str] = []  # things the user should know about how the data was read
        self._hf = None
        self._reader: Any = None
        self.split = split
        self.root = self._split_root(split)

    # --- description -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for run configurations): what was read, which split, how."""
        out: dict[str, Any] = {
            "path": str(self.path.resolve()) if self.path.exists() else str(self.path),
            "format": self.format,
            "split": self.split or "all",
        }
        if self.captions.columns_used:
            out["columns"] = self.captions.columns_used
        if self.all_captions:
            out["all_captions"] = True
        if self._reader is not None and hasattr(self._reader, "describe"):
            out.update(self._reader.describe())
        notes = self.notes + self.captions.notes
        if notes:
            out["notes"] = notes
        return out

    # --- iteration -------------------------------------------------------------------------
    def rows(self) -> Iterator[PairRow]:
        """Parse the rows in order without opening images (streaming)."""
        from . import tables

        fmt, root = self.format, self.root
        if fmt == "hf":
            from .hf import hf_rows

            yield from hf_rows(self, self._load_hf())
        elif fmt == "coco":
            from .coco import CocoReader

            self._reader = self._reader or CocoReader(
                root, self.images, self.instances, self.coco_ground_truth, self.coco_match, self.columns
            )
            yield from self._reader.rows(self.captions)
        elif fmt == "webdataset":
            from .webdataset import WebdatasetReader

            self._reader = self._reader or WebdatasetReader(root, self.columns)
            yield from self._reader.rows(self.captions)
        elif fmt == "parquet":
            from .parquet import ParquetReader

            # a split folder is the split; otherwise <split>-*.parquet names may carry it
            self._reader = self._reader or ParquetReader(root, self.columns, self.split if root == self.path else None)
            yield from self._reader.rows(self.captions)
        else:
            file = self._caption_file(root) if fmt == "folder" else root
            kind = self._file_kind(file)
            base = file.parent
            if kind == "jsonl":
                yield from tables.jsonl_rows(file, base, self.columns, self.captions)
            elif kind in ("csv", "tsv"):
                yield from tables.table_rows(file, base, "," if kind == "csv" else "\t", self.columns, self.captions)
            else:  # txt captions in a folder
                yield from tables.txt_rows(file, base, self.columns, self.captions)

    def __iter__(self) -> Iterator[Pair]:
        for row in self.rows():
            yield self.load(row)

    def __len__(self) -> int:
        if self.format == "hf" and not self.all_captions:
            return len(self._load_hf())
        n = 0
        for _ in self.rows():
            n += 1
        return n

    def load(self, row: PairRow) -> Pair:
        """Open a row's image (and mask); problems become ``Pair.error`` instead of exceptions."""
        if not row.caption.strip():
            return Pair(row, error=f"{row.source}: {row.extras.get('caption_problem', 'empty caption')}")
        try:
            image = _open(row.image, row.source)
        except InputError as e:
            msg = str(e)
            return Pair(row, error=msg if msg.startswith(row.source) else f"{row.source}: {msg}")
        mask = None
        if row.mask is not None:
            try:
                mask = _load_mask(row.mask() if callable(row.mask) else row.mask)
            except InputError as e:
                return Pair(row, error=f"{row.source}: mask: {e}")
            if mask.size != image.size:
                return Pair(
                    row,
                    error=f"{row.source}: mask is {mask.size[0]}x{mask.size[1]} but the image is "
                    f"{image.size[0]}x{image.size[1]}",
                )
        return Pair(row, image=image, mask=mask)

    # --- helpers -----------------------------------------------------------------------------
    def _split_root(self, split: str | None) -> Path:
        """The folder / file of the requested split (folders with train / val / test sub-folders)."""
        p = self.path
        if self.format == "hf" or (self.format == "parquet" and p.is_dir() and _parquet_splits(p)):
            return p  # the split is chosen by the reader
        subs = [d for d in sorted(p.iterdir()) if d.is_dir() and d.name.lower() in SPLIT_DIRS] if p.is_dir() else []
        if not subs:
            if split is not None and split != "all":
                raise InputError(
                    f"--split {split}: {p} holds a single split (no train / val / test folders or "
                    "saved splits); leave --split out"
                )
            self.split = None
            return p
        names = {d.name.lower(): d for d in subs}
        if split is None:
            if len(subs) == 1:
                split = subs[0].name
            elif "test" in names:
                split = "test"
            else:
                raise InputError(f"{p} has the splits {', '.join(d.name for d in subs)}; pass --split NAME")
        if split.lower() not in names:
            raise InputError(
                f"{p} has no split {split!r} (splits: {', '.join(d.name for d in subs)}); pass --split NAME"
            )
        self.split = names[split.lower()].name
        root = names[split.lower()]
        if self.format == "folder":  # the split folder decides its own layout
            self.format = detect_format(root)
        return root

    def _caption_file(self, root: Path) -> Path:
        for name in FOLDER_CAPTION_FILES:
            if (root / name).is_file():
                return root / name
        hint = "(or: .tar shards, .parquet files, a saved dataset)"
        if _looks_like_class_folders(root):
            hint = (
                "(this looks like class folders, root/<class>/<image>: those are read by "
                "`vlexplain deal train` / `deal evaluate`)"
            )
        raise InputError(
            f"{root}: an image folder needs one of {', '.join(FOLDER_CAPTION_FILES)} beside the images " + hint
        )

    def _file_kind(self, file: Path) -> str:
        if self.format in ("jsonl", "csv", "tsv"):
            return self.format
        suf = file.suffix.lower()
        if suf in (".jsonl", ".ndjson", ".json"):
            return "jsonl"
        if suf in (".csv", ".tsv"):
            return suf[1:]
        if suf == ".txt":
            return "txt"
        raise InputError(f"{file}: unknown data file type {suf!r} (expected .jsonl, .csv, .tsv or a folder)")

    def _load_hf(self):
        from .hf import load_hf

        if self._hf is None:
            self._hf = load_hf(self)
        return self._hf


def open_pairs(source: str | os.PathLike | PairDataset, **kwargs: Any) -> PairDataset:
    """A ``PairDataset`` for a path (format detected) or the dataset itself."""
    if isinstance(source, PairDataset):
        return source
    return PairDataset(source, **kwargs)


def detect_format(path: Path) -> Format:
    """Guess the format of a data path."""
    if is_url(str(path)):
        refuse_url(str(path), "--data", "the data")
    if BRACE.search(path.name) or path.name.lower().endswith((".tar", ".tar.gz", ".tgz")):
        return "webdataset"
    if path.is_dir():
        if any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "hf"
        if any((path / n).is_file() for n in FOLDER_CAPTION_FILES):
            return "folder"
        if next(iter(sorted(path.glob("*.tar"))), None) is not None:
            return "webdataset"
        if next(iter(sorted(path.glob("*.parquet"))), None) is not None:
            return "parquet"
        return "folder"
    suf = path.suffix.lower()
    if suf == ".json":
        return "coco" if _is_coco(path) else "jsonl"
    if suf in _SUFFIX_KINDS:
        return _SUFFIX_KINDS[suf]  # type: ignore[return-value]
    raise InputError(
        f"{path}: unknown data file type {suf!r} (expected .jsonl, .json (COCO), .csv, .tsv, .tar, "
        ".parquet, an image folder or a saved dataset)"
    )


_COCO_HEAD = re.compile(r'^\s*\{\s*"(?:info|licenses|images|annotations|categories)"\s*:')


def _is_coco(path: Path) -> bool:
    """A COCO annotation file: one JSON object with ``images`` and ``annotations``."""
    if not path.is_file():
        return False
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(1)
        while head.isspace():
            head = f.read(1)
        if head != "{":
            return False
        rest = f.read(4096)
        if _COCO_HEAD.match(head + rest):
            return True  # COCO's own key order: no need to parse the whole (large) file twice
        try:
            obj = json.loads(head + rest + f.read())
        except json.JSONDecodeError:
            return False  # JSON Lines (or broken: the JSON Lines reader says where)
    return isinstance(obj, dict) and "images" in obj and "annotations" in obj


def _parquet_splits(folder: Path) -> list[str]:
    from .parquet import parquet_splits

    return parquet_splits(folder)


def _looks_like_class_folders(root: Path) -> bool:
    """Sub-folders holding images directly, and no image at the top: ``root/<class>/<image>``."""
    from .classes import IMAGE_EXTENSIONS

    def images(d: Path) -> bool:
        return any(f.suffix.lower() in IMAGE_EXTENSIONS for f in d.iterdir() if f.is_file())

    subs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return bool(subs) and not images(root) and any(images(d) for d in subs[:50])


def _open(image: Any, where: str) -> Image.Image:
    if isinstance(image, MissingImage):
        raise InputError(image.why)
    if isinstance(image, LazyBytes):
        image = image.read()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return open_bytes(bytes(image), where)
    return load_image(image)


def _load_mask(src: Any) -> Image.Image:
    if isinstance(src, Image.Image):
        return src.convert("L")
    if isinstance(src, (bytes, bytearray, LazyBytes)):
        return open_bytes(src.read() if isinstance(src, LazyBytes) else bytes(src), "mask").convert("L")
    path = Path(src)
    if not path.is_file():
        raise InputError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("L")
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read mask {path}: {e}") from None
