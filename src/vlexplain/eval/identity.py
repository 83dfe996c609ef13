"""The data a run was computed on, fingerprinted so that ``resume`` never mixes two datasets.

A run's identity (saved in ``config.json`` as ``data_identity``) holds:

* ``files``: the SHA-256 of the data file's content (for a folder or a saved dataset, of every
  file in it that is not an image), so an edited caption is noticed even when the row count stays;
* ``rows``: per shard, a digest of the parsed rows (caption, image reference, boxes, mask,
  extra fields), so the message can say which samples changed;
* ``images``: per shard, a digest of the size and modification time of every image and mask file
  the rows name (cheap: a ``stat`` per file, no decoding).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: image suffixes left to the per-row stat (not hashed by content)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
_CHUNK = 1 << 20


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def data_files_digest(path: str | os.PathLike) -> dict[str, str]:
    """Relative path -> SHA-256 of the data file, or of every non-image file under a data folder."""
    p = Path(path)
    if p.is_file():
        return {p.name: _sha_file(p)}
    out: dict[str, str] = {}
    if p.is_dir():
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                f = Path(root) / name
                if not name.startswith(".") and f.suffix.lower() not in _IMAGE_SUFFIXES:
                    out[str(f.relative_to(p))] = _sha_file(f)
    return out


def _file_stat(ref: Any) -> Any:
    """[size, mtime_ns] of an image or mask path, "missing" for a path that is not there, None otherwise."""
    if not isinstance(ref, (str, os.PathLike)):
        return None
    try:
        st = os.stat(ref)
    except OSError:
        return "missing"
    return [st.st_size, st.st_mtime_ns]


def _ref(value: Any) -> Any:
    """A JSON-ready stand-in for a row's image or mask."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    return type(value).__name__  # in-memory images: covered by the data files' digest


def data_identity(ds: Any, n_total: int, shard_size: int) -> dict[str, Any]:
    """The fingerprint of the first ``n_total`` pairs of ``ds`` (see the module docstring)."""
    n_shards = -(-n_total // shard_size) if shard_size else 0
    rows = [hashlib.sha256() for _ in range(n_shards)]
    images = [hashlib.sha256() for _ in range(n_shards)]
    for row in ds.rows():
        if row.index >= n_total:
            break
        k = row.index // shard_size
        rec = [row.index, row.caption, _ref(row.image), row.boxes, _ref(row.mask), row.extras]
        rows[k].update(json.dumps(rec, sort_keys=True, default=str).encode() + b"\n")
        images[k].update(json.dumps([_file_stat(row.image), _file_stat(row.mask)]).encode() + b"\n")
    path = getattr(ds, "path", None)
    return {"files": data_files_digest(path) if path is not None else {},
            "rows": [h.hexdigest()[:16] for h in rows],
            "images": [h.hexdigest()[:16] for h in images]}


def _spans(diff: list[int], shard_size: int, n_total: int) -> str:
    parts = [f"{k * shard_size}-{min(n_total, (k + 1) * shard_size) - 1}" for k in diff[:3]]
    more = f" and {len(diff) - 3} more shards" if len(diff) > 3 else ""
    return ", ".join(parts) + more


def describe_change(old: dict[str, Any] | None, new: dict[str, Any], shard_size: int, n_total: int) -> str | None:
    """What differs between two fingerprints, in words (None when they agree)."""
    if not old:
        return "the run records no fingerprint of its data (written by an older vlexplain), so a resume cannot be checked"
    said = []
    of, nf = old.get("files", {}), new.get("files", {})
    changed = sorted(k for k in set(of) | set(nf) if of.get(k) != nf.get(k))
    if changed:
        said.append(f"the data file{'s' if len(changed) > 1 else ''} {', '.join(changed[:3])} changed")
    for key, what in (("rows", "the rows (captions, image paths, boxes) of samples"),
                      ("images", "the image files (size or modification time) of samples")):
        a, b = old.get(key, []), new.get(key, [])
        diff = [k for k in range(max(len(a), len(b))) if k >= len(a) or k >= len(b) or a[k] != b[k]]
        if diff:
            said.append(f"{what} {_spans(diff, shard_size, n_total)} changed")
    return "; ".join(said) or None
