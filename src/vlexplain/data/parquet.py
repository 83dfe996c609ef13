"""Parquet files of pairs: a ``.parquet`` file or a folder of them (read in order, batch by batch).

The image column holds encoded bytes, a Hugging Face image struct (``{"bytes": ..., "path": ...}``)
or a path (relative to the file's folder); the caption column a string or a list of captions.
Columns are found by name as in CSV files (``image_key`` / ``caption_key`` name others). A folder
of Hugging Face hub exports (``train-00000-of-00002.parquet``, ``test-00000-of-00001.parquet``) has
splits: ``split`` picks the files whose name starts with it. Needs pyarrow (the ``eval`` extra).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingExtraError
from .rows import Captions, Columns, PairRow, expand, is_url, refuse_url, resolve

#: Hugging Face hub exports: ``train-00000-of-00002.parquet``, ``validation-00000-of-00001.parquet``
_SPLIT_FILE = re.compile(r"^(train|training|validation|valid|val|dev|test|testing)[-_.]", re.IGNORECASE)


def parquet_files(root: Path) -> list[Path]:
    if root.is_dir():
        files = sorted(
            p for p in root.rglob("*.parquet") if not any(s.startswith(".") for s in p.relative_to(root).parts)
        )
        if not files:
            raise InputError(f"{root}: no .parquet files in this folder")
        return files
    return [root]


def parquet_splits(folder: Path) -> list[str]:
    """The split names of ``<split>-NNNNN-of-NNNNN.parquet`` files (empty when the names carry none)."""
    names = [m.group(1) for p in folder.rglob("*.parquet") if (m := _SPLIT_FILE.match(p.name))]
    files = list(folder.rglob("*.parquet"))
    return sorted(set(names)) if files and len(names) == len(files) else []


class ParquetReader:
    """Rows of Parquet files (see the module docstring)."""

    def __init__(self, root: Path, columns: Columns, split: str | None):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise MissingExtraError(f"{root}: reading Parquet needs pyarrow: pip install 'vlexplain[eval]'") from None
        self.root, self.columns = root, columns
        files = parquet_files(root)
        splits = parquet_splits(root) if root.is_dir() else []
        self.split = None
        if splits:
            if split is None:
                split = splits[0] if len(splits) == 1 else ("test" if "test" in splits else None)
                if split is None:
                    raise InputError(f"{root} has the splits {', '.join(splits)}; pass --split NAME")
            if split not in splits:
                raise InputError(f"{root} has no split {split!r} (splits: {', '.join(splits)}); pass --split NAME")
            files = [p for p in files if (m := _SPLIT_FILE.match(p.name)) and m.group(1) == split]
            self.split = split
        elif split not in (None, "all"):
            raise InputError(f"--split {split}: the Parquet files of {root} carry no split names; leave --split out")
        self.files = files

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": [str(p.resolve()) for p in self.files]
            if len(self.files) <= 8
            else f"{len(self.files)} files: {self.files[0].name} .. {self.files[-1].name}"
        }
        if self.split:
            out["split"] = self.split
        return out

    def rows(self, captions: Captions) -> Iterator[PairRow]:
        import pyarrow.parquet as pq

        offset = 0
        for file in self.files:
            try:
                pf = pq.ParquetFile(file)
            except Exception as e:  # pyarrow raises its own error types for non-Parquet files
                raise InputError(f"{file}: not a readable Parquet file ({e})") from None
            names = list(pf.schema_arrow.names)
            cols = self.columns.resolve(names, str(file))
            base = file.parent

            def image(value: Any, where: str, base: Path = base) -> Any:
                if isinstance(value, dict):
                    if value.get("bytes") is not None:
                        return bytes(value["bytes"])
                    value = value.get("path")
                if isinstance(value, (bytes, bytearray)):
                    return bytes(value)
                if isinstance(value, str) and value.strip():
                    if is_url(value):
                        refuse_url(value, where)
                    return resolve(value, base, where)
                raise InputError(f"{where}: the image field holds neither bytes nor a path")

            def records(pf: Any = pf, file: Path = file) -> Iterator[tuple[dict[str, Any], str]]:
                n = 0
                for batch in pf.iter_batches(batch_size=256):
                    for rec in batch.to_pylist():
                        yield rec, f"{file}:row {n}"
                        n += 1

            n = 0
            for row in expand(records(), cols, captions, base, image=image):
                row.index += offset
                n += 1
                yield row
            offset += n
