"""Text tables of pairs: JSON Lines, CSV / TSV (with or without a header row), ``captions.txt``.

A CSV / TSV first row is a header when none of its cells names an image (an existing file, a file
name with an image extension, or a URL); the columns are then found by name (``--image-key`` /
``--caption-key``, else the known names of ``IMAGE_KEYS`` and
``CAPTION_KEYS``: ``image``/``caption``, OpenCLIP's ``filepath``/``title``,
``url``/``caption``, ``image``/``text`` ...). Without a header, a row has two fields and the one that
names an image is the image (``caption<TAB>image`` as in Conceptual Captions, or ``image<TAB>caption``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import utf8_errors
from .classes import IMAGE_EXTENSIONS
from .rows import Captions, Columns, PairRow, expand, is_url

csv.field_size_limit(10_000_000)


def jsonl_rows(file: Path, base: Path, cols: Columns, captions: Captions) -> Iterator[PairRow]:
    """One JSON object per line; the columns are resolved on the first object."""
    records = _jsonl_records(file)
    try:
        first = next(records)
    except StopIteration:
        return
    rec, where = first
    if isinstance(rec, dict) and "annotations" in rec and "images" in rec:
        raise InputError(
            f"{where}: this is a COCO annotation file, not JSON Lines; pass it as a .json file with "
            "--images (the image folder)"
        )
    resolved = cols.resolve(list(rec) if isinstance(rec, dict) else [], where, fixed=False)

    def chain():
        yield first
        yield from records

    yield from expand(chain(), resolved, captions, base)


def _jsonl_records(file: Path) -> Iterator[tuple[Any, str]]:
    first = True
    with open(file, encoding="utf-8-sig") as f, utf8_errors(file, "data file"):
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{file}:{lineno}"
            if first and line.lstrip().startswith("["):
                raise InputError(f"{where}: a JSON array; write JSON Lines instead (one object per line)")
            first = False
            try:
                rec = json.loads(line.rstrip("\r\n"))  # with its newline an error at the end reads "line 2 column 1"
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            yield rec, where


def names_image(cell: str, base: Path) -> int:
    """How surely a cell names an image: 3 an existing file, 2 a URL, 1 an image file name, 0 not."""
    c = cell.strip().strip('"')
    if not c:
        return 0
    if is_url(c):
        return 2
    try:
        if (base / c).is_file():
            return 3
    except (OSError, ValueError):
        pass
    return 1 if Path(c).suffix.lower() in IMAGE_EXTENSIONS else 0


def table_rows(file: Path, base: Path, delim: str, cols: Columns, captions: Captions) -> Iterator[PairRow]:
    """CSV / TSV rows, header detected (see the module docstring)."""
    with open(file, encoding="utf-8-sig", newline="") as f, utf8_errors(file, "data file"):
        first_line = f.readline().rstrip("\r\n")
    if not first_line.strip():
        return
    cells = first_line.split("\t") if delim == "\t" else next(csv.reader([first_line], delimiter=delim))
    score = [names_image(c, base) for c in cells]
    if max(score) == 0:
        yield from _header_rows(file, base, delim, cols, captions)
        return
    if cols.image is not None or cols.caption is not None:
        raise InputError(
            f"{file}:1: the file has no header row (its first row names an image), so --image-key / "
            "--caption-key cannot apply; add a header row naming the columns"
        )
    if len(cells) != 2:
        raise InputError(
            f"{file}:1: a file without a header row needs two fields per line (caption and image), got "
            f"{len(cells)}; add a header row naming the columns"
        )
    img_col = max(range(2), key=lambda j: (score[j], j))
    names = ["caption", "image"] if img_col == 1 else ["image", "caption"]
    expect = "caption<TAB>image path" if img_col == 1 else "image file<TAB>caption"
    if delim != "\t":
        expect = expect.replace("<TAB>", ",")
    yield from expand(
        _records(file, delim, names, header=False, expect=expect), Columns("image", "caption"), captions, base
    )


def _header_rows(file: Path, base: Path, delim: str, cols: Columns, captions: Captions) -> Iterator[PairRow]:
    with open(file, encoding="utf-8-sig", newline="") as f, utf8_errors(file, "data file"):
        try:
            header = [h.strip() for h in next(csv.reader(f, delimiter=delim))]
        except csv.Error as e:
            raise InputError(f"{file}:1: malformed header ({e})") from None
    seen: dict[str, str] = {}
    for h in header:
        if h.lower() in seen:
            raise InputError(
                f"{file}:1: the header names the column {h!r} twice"
                + (f" (as {seen[h.lower()]!r} and {h!r})" if seen[h.lower()] != h else "")
                + "; rename one so that each column has its own name"
            )
        seen[h.lower()] = h
    if len(header) < 2:
        sep = "<TAB>" if delim == "\t" else ","
        raise InputError(
            f"{file}:1: expected 'image file{sep}caption' (or a header row naming the columns), got "
            f"one field: {header[0][:60]!r}"
        )
    resolved = cols.resolve(header, f"{file}:1")
    keep = {k for k in (resolved.image, resolved.caption, resolved.boxes or "boxes", resolved.mask or "mask") if k}
    yield from expand(_records(file, delim, header, header=True, keep=keep), resolved, captions, base)


def _records(
    file: Path, delim: str, names: list[str], header: bool, keep: set[str] | None = None, expect: str = ""
) -> Iterator[tuple[dict[str, Any], str]]:
    raw = delim == "\t" and not header  # headerless TSV (Conceptual Captions): tabs only, quotes are text
    with open(file, encoding="utf-8-sig", newline="") as f, utf8_errors(file, "data file"):
        reader = csv.reader(f, delimiter=delim, quoting=csv.QUOTE_NONE if raw else csv.QUOTE_MINIMAL)
        if header:
            next(reader)
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
            if len(cells) != len(names):
                if expect:
                    raise InputError(f"{where}: expected '{expect}', got {len(cells)} field(s)")
                raise InputError(f"{where}: expected {len(names)} fields ({', '.join(names)}), got {len(cells)}")
            rec = dict(zip(names, cells))
            if keep is not None:
                rec = {k: (v if k in keep else _decode(v)) for k, v in rec.items()}
            yield rec, where


def _decode(value: str) -> Any:
    """An extra cell: numbers and JSON are decoded, the rest stays text."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def txt_rows(file: Path, base: Path, cols: Columns, captions: Captions) -> Iterator[PairRow]:
    """``captions.txt`` of an image folder: ``file<TAB>caption`` lines, or a CSV with a header."""
    with open(file, encoding="utf-8-sig") as f, utf8_errors(file, "data file"):
        first = next((line for line in f if line.strip()), "")
    delim = "\t" if "\t" in first or "," not in first else ","
    yield from table_rows(file, base, delim, cols, captions)
