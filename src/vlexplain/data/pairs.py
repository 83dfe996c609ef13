"""Image-caption pair datasets read lazily from files, folders or saved Hugging Face datasets.

Accepted sources (see :func:`open_pairs`):

* ``*.jsonl``: one JSON object per line with ``image`` and ``caption`` (optional ``boxes``: COCO
  ``[x, y, w, h]`` boxes in pixels of the original image, optional ``mask``: a PNG path).
* ``*.csv`` / ``*.tsv`` with a header naming ``image`` and ``caption`` (optional ``boxes`` as a
  JSON list in the cell, optional ``mask``).
* a Conceptual-Captions-style ``*.tsv`` without header: ``caption<TAB>image path`` per line.
* a folder of images with ``captions.jsonl``, ``captions.csv``, ``captions.tsv`` or
  ``captions.txt`` (``file<TAB>caption`` per line, or a CSV with an ``image,caption`` header).
* a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (needs ``pip install datasets``).

Relative image paths are resolved against the folder of the data file. Iteration is streaming:
:meth:`PairDataset.rows` parses text only, :meth:`PairDataset.load` opens one image. A malformed
line raises :class:`~vlexplain.errors.InputError` naming the file and line; a missing or corrupt
image makes :meth:`PairDataset.load` return a :class:`Pair` with ``error`` set instead of raising.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from PIL import Image

from ..errors import InputError, MissingExtraError
from ..images import load_image

Format = Literal["jsonl", "csv", "tsv", "cc_tsv", "folder", "hf"]

#: caption files looked for, in this order, inside an image folder
FOLDER_CAPTION_FILES = ("captions.jsonl", "captions.csv", "captions.tsv", "captions.txt")

csv.field_size_limit(10_000_000)


#: data-file suffix -> format
_SUFFIX_KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}


@dataclass
class PairRow:
    """One parsed row, before its image is opened.

    Attributes:
        index: 0-based position in the dataset (the sample id used by evaluation runs).
        caption: the text.
        image: an image path (absolute), or an in-memory image (HF datasets).
        source: ``file:line`` (or ``dataset[index]``) for messages.
        boxes: COCO ``[x, y, w, h]`` boxes in original-image pixels, or None.
        mask: path of a ground-truth mask PNG, or None.
        extras: the row's other fields (e.g. ``cell_index`` for metrics that need it).
    """

    index: int
    caption: str
    image: Any
    source: str
    boxes: list[list[float]] | None = None
    mask: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pair:
    """A row with its image opened (or the reason it could not be)."""

    row: PairRow
    image: Image.Image | None = None
    mask: Image.Image | None = None
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> int:
        return self.row.index

    @property
    def caption(self) -> str:
        return self.row.caption


class PairDataset:
    """A lazily read collection of image-caption pairs.

    Args:
        source: the data file, folder or saved dataset.
        format: one of :data:`Format`; detected from the path when None.
        split: for a saved ``DatasetDict``, which split (default: the only one, else "test").
        image_key / caption_key: column names (defaults ``image`` / ``caption``; Hugging Face
            datasets also try ``text``).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        format: Format | None = None,
        split: str | None = None,
        image_key: str = "image",
        caption_key: str = "caption",
    ):
        self.path = Path(source).expanduser()
        if not self.path.exists():
            raise InputError(f"data not found: {self.path}")
        self.format: Format = format or detect_format(self.path)
        self.split = split
        self.image_key = image_key
        self.caption_key = caption_key
        self._hf = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for run configurations)."""
        return {"path": str(self.path.resolve()), "format": self.format, "split": self.split}

    # --- iteration -------------------------------------------------------------------------
    def rows(self) -> Iterator[PairRow]:
        """Parse the rows in order without opening images (streaming)."""
        if self.format == "hf":
            yield from self._hf_rows()
            return
        file = self._caption_file() if self.format == "folder" else self.path
        kind = self._file_kind(file)
        base = file.parent
        if kind == "jsonl":
            yield from _jsonl_rows(file, base, self.image_key, self.caption_key)
        elif kind in ("csv", "tsv"):
            yield from _table_rows(file, base, "," if kind == "csv" else "\t", self.image_key, self.caption_key)
        elif kind == "cc_tsv":
            yield from _cc_rows(file, base)
        else:  # txt captions in a folder
            yield from _txt_rows(file, base, self.image_key, self.caption_key)

    def __iter__(self) -> Iterator[Pair]:
        for row in self.rows():
            yield self.load(row)

    def __len__(self) -> int:
        if self.format == "hf":
            return len(self._load_hf())
        n = 0
        for _ in self.rows():
            n += 1
        return n

    def load(self, row: PairRow) -> Pair:
        """Open a row's image (and mask); problems become ``Pair.error`` instead of exceptions."""
        if not row.caption.strip():
            return Pair(row, error=f"{row.source}: empty caption")
        try:
            image = load_image(row.image)
        except InputError as e:
            return Pair(row, error=f"{row.source}: {e}")
        mask = None
        if row.mask is not None:
            try:
                mask = _load_mask(row.mask)
            except InputError as e:
                return Pair(row, error=f"{row.source}: mask: {e}")
            if mask.size != image.size:
                return Pair(row, error=f"{row.source}: mask is {mask.size[0]}x{mask.size[1]} but the image is "
                            f"{image.size[0]}x{image.size[1]}")
        return Pair(row, image=image, mask=mask)

    # --- helpers -----------------------------------------------------------------------------
    def _caption_file(self) -> Path:
        for name in FOLDER_CAPTION_FILES:
            if (self.path / name).is_file():
                return self.path / name
        raise InputError(f"{self.path}: an image folder needs one of {', '.join(FOLDER_CAPTION_FILES)} beside the images")

    def _file_kind(self, file: Path) -> str:
        if self.format in ("jsonl", "csv", "cc_tsv"):
            return self.format
        suf = file.suffix.lower()
        if suf in _SUFFIX_KINDS and _SUFFIX_KINDS[suf] != "tsv":
            return _SUFFIX_KINDS[suf]
        if suf == ".txt":
            return "txt"
        if suf == ".tsv" or self.format == "tsv":
            return "tsv" if _has_header(file, "\t", self.image_key, self.caption_key) else "cc_tsv"
        raise InputError(f"{file}: unknown data file type {suf!r} (expected .jsonl, .csv, .tsv or a folder)")

    def _hf_rows(self) -> Iterator[PairRow]:
        ds = self._load_hf()
        cols = set(ds.column_names)
        ik = self.image_key
        ck = self.caption_key if self.caption_key in cols else ("text" if "text" in cols else self.caption_key)
        for key in (ik, ck):
            if key not in cols:
                raise InputError(f"{self.path}: the dataset has no column {key!r} (columns: {', '.join(sorted(cols))})")
        base = self.path
        for i in range(len(ds)):
            rec = ds[i]
            img = rec[ik]
            if isinstance(img, str):
                img = _resolve(img, base)
            elif isinstance(img, dict) and img.get("bytes") is not None:
                img = Image.open(io.BytesIO(img["bytes"]))
            elif isinstance(img, dict) and img.get("path"):
                img = _resolve(img["path"], base)
            cap = rec[ck]
            if isinstance(cap, list):
                cap = cap[0] if cap else ""
            boxes = _check_boxes(rec.get("boxes"), f"{self.path}[{i}]")
            extras = {k: v for k, v in rec.items() if k not in (ik, ck, "boxes", "mask")}
            yield PairRow(i, str(cap), img, f"{self.path}[{i}]", boxes, rec.get("mask"), extras)

    def _load_hf(self):
        if self._hf is not None:
            return self._hf
        try:
            import datasets
        except ImportError:
            raise MissingExtraError(
                f"{self.path} is a saved Hugging Face dataset; reading it needs the 'datasets' package: pip install datasets"
            ) from None
        obj = datasets.load_from_disk(str(self.path))
        if isinstance(obj, datasets.DatasetDict):
            splits = list(obj.keys())
            split = self.split or (splits[0] if len(splits) == 1 else "test")
            if split not in obj:
                raise InputError(f"{self.path}: no split {split!r}; splits: {', '.join(splits)} (pass split=...)")
            obj = obj[split]
        self._hf = obj
        return obj


def open_pairs(source: str | os.PathLike | PairDataset, **kwargs: Any) -> PairDataset:
    """A :class:`PairDataset` for a path (format detected) or the dataset itself."""
    if isinstance(source, PairDataset):
        return source
    return PairDataset(source, **kwargs)


def detect_format(path: Path) -> Format:
    """Guess the format of a data path."""
    if path.is_dir():
        if any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "hf"
        return "folder"
    suf = path.suffix.lower()
    if suf in _SUFFIX_KINDS:
        return _SUFFIX_KINDS[suf]
    raise InputError(f"{path}: unknown data file type {suf!r} (expected .jsonl, .csv, .tsv, an image folder or a saved dataset)")


# --- parsers --------------------------------------------------------------------------------
def _resolve(p: Any, base: Path) -> Any:
    if not isinstance(p, str):
        return p
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else base / q)


def _check_boxes(value: Any, where: str) -> list[list[float]] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: 'boxes' is not valid JSON ({e.msg})") from None
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{where}: 'boxes' must be a list of [x, y, w, h] boxes")
    if len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        value = [value]  # a single box
    out = []
    for b in value:
        if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(isinstance(v, (int, float)) for v in b):
            raise InputError(f"{where}: each box must be [x, y, w, h] (COCO, pixels), got {b!r}")
        if b[2] < 0 or b[3] < 0:
            raise InputError(f"{where}: box {list(b)} has a negative width or height")
        out.append([float(v) for v in b])
    return out


def _record(i: int, rec: Any, where: str, base: Path, ik: str, ck: str) -> PairRow:
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected an object with {ik!r} and {ck!r}, got {type(rec).__name__}")
    for key in (ik, ck):
        if key not in rec or rec[key] is None:
            raise InputError(f"{where}: missing {key!r}")
    img = rec[ik]
    if not isinstance(img, str) or not img.strip():
        raise InputError(f"{where}: {ik!r} must be a non-empty path")
    cap = rec[ck]
    if not isinstance(cap, str):
        raise InputError(f"{where}: {ck!r} must be a string")
    mask = rec.get("mask") or None
    extras = {k: v for k, v in rec.items() if k not in (ik, ck, "boxes", "mask")}
    return PairRow(i, cap, _resolve(img, base), where, _check_boxes(rec.get("boxes"), where),
                   _resolve(mask, base) if mask else None, extras)


def _jsonl_rows(file: Path, base: Path, ik: str, ck: str) -> Iterator[PairRow]:
    i = 0
    with open(file, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{file}:{lineno}"
            if i == 0 and line.lstrip().startswith("["):
                raise InputError(f"{where}: a JSON array; write JSON Lines instead (one object per line)")
            try:
                rec = json.loads(line.rstrip("\r\n"))  # with its newline an error at the end reads "line 2 column 1"
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            yield _record(i, rec, where, base, ik, ck)
            i += 1


def _has_header(file: Path, delim: str, ik: str, ck: str) -> bool:
    with open(file, encoding="utf-8-sig", newline="") as f:
        first = f.readline()
    fields = [c.strip().lower() for c in first.rstrip("\r\n").split(delim)]
    return ik in fields and ck in fields


def _table_rows(file: Path, base: Path, delim: str, ik: str, ck: str) -> Iterator[PairRow]:
    with open(file, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delim)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(f"{file}:1: malformed header ({e})") from None
        low = [h.lower() for h in header]
        for key in (ik, ck):
            if key not in low:
                raise InputError(f"{file}:1: the header needs columns {ik!r} and {ck!r}, got {header}")
        i = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise InputError(f"{file}:{reader.line_num}: malformed line ({e})") from None
            where = f"{file}:{reader.line_num}"
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise InputError(f"{where}: expected {len(header)} fields ({', '.join(header)}), got {len(cells)}")
            yield _record(i, {k: _cell(k, v, ik, ck) for k, v in zip(low, cells)}, where, base, ik, ck)
            i += 1


def _cell(key: str, value: str, ik: str, ck: str) -> Any:
    """CSV cell -> value: numbers and JSON in extra columns are decoded, the rest stays text."""
    if key in (ik, ck, "boxes", "mask"):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _lines(file: Path) -> Iterator[tuple[str, str]]:
    """``(where, line)`` for every non-blank line of a text file (BOM and line ends removed)."""
    with open(file, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield f"{file}:{lineno}", line


def _cc_rows(file: Path, base: Path) -> Iterator[PairRow]:
    for i, (where, line) in enumerate(_lines(file)):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip():
            raise InputError(f"{where}: expected 'caption<TAB>image path', got {len(parts)} field(s)")
        yield PairRow(i, parts[0], _resolve(parts[1].strip(), base), where)


def _txt_rows(file: Path, base: Path, ik: str, ck: str) -> Iterator[PairRow]:
    with open(file, encoding="utf-8-sig") as f:
        first = f.readline().strip().lower()
    if first.replace(" ", "") == f"{ik},{ck}":
        yield from _table_rows(file, base, ",", ik, ck)
        return
    for i, (where, line) in enumerate(_lines(file)):
        name, sep, cap = line.partition("\t")
        if not sep or not name.strip():
            raise InputError(f"{where}: expected 'image file<TAB>caption'")
        yield PairRow(i, cap, _resolve(name.strip(), base), where)


def _load_mask(src: Any) -> Image.Image:
    if isinstance(src, Image.Image):
        return src.convert("L")
    path = Path(src)
    if not path.is_file():
        raise InputError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("L")
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read mask {path}: {e}") from None
