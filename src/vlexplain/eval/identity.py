"""The data a run was computed on, fingerprinted so that ``resume`` never mixes two datasets.

A run's identity (saved in ``config.json`` as ``data_identity``) holds:

* ``files``: per data file (the data file; for a folder or a saved dataset every file in it that is
  not an image; every shard of a webdataset, brace patterns included; COCO's instances file): the
  SHA-256 of its content when it is small text (pairs JSONL / CSV / TSV, COCO json, dataset
  metadata: at most ``HASH_LIMIT`` bytes), else ``size=<bytes> mtime=<ns>`` (shards, Parquet,
  Arrow and any larger file). An edited caption is noticed even when the row count stays; a start
  never reads a large dataset's bytes just to fingerprint it (a rewritten shard or Parquet file
  has a new modification time, as ``make`` and ``rsync`` assume);
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
#: bulk data (image bytes inside): fingerprinted by size and modification time whatever their size
_BULK_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".parquet", ".arrow", ".safetensors", ".npy", ".npz", ".zip")
#: files up to this size are hashed by content: 64 MiB covers pairs files and COCO's captions_val /
#: instances_val (4 / 25 MB) and the train captions file of most datasets; hashing it costs about as
#: much as the JSON parse every start does anyway (COCO) or a fraction of the row scan (JSONL, CSV)
HASH_LIMIT = 64 << 20
_CHUNK = 1 << 20


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: Path) -> str:
    """The SHA-256 of a small text file, ``size=... mtime=...`` of a large or bulk one."""
    st = path.stat()
    if st.st_size > HASH_LIMIT or path.name.lower().endswith(_BULK_SUFFIXES):
        return f"size={st.st_size} mtime={st.st_mtime_ns}"
    return _sha_file(path)


def _folder_files(p: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(p):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            f = Path(root) / name
            if not name.startswith(".") and f.suffix.lower() not in _IMAGE_SUFFIXES:
                out[str(f.relative_to(p))] = file_fingerprint(f)
    return out


def data_files_digest(path: str | os.PathLike, extra: dict[str, str | os.PathLike] | None = None) -> dict[str, str]:
    """Name -> fingerprint (``file_fingerprint``) of the data file, of every non-image file under
    a data folder, or of every shard a brace pattern names; ``extra`` adds named files (label -> path)."""
    from ..data.pairs import BRACE
    from ..data.webdataset import expand_shards

    p = Path(path)
    out: dict[str, str] = {}
    if p.is_file():
        out[p.name] = file_fingerprint(p)
    elif p.is_dir():
        out.update(_folder_files(p))
    elif (m := BRACE.search(str(p))) is not None:  # shards/{00000..00009}.tar: keyed below shards/
        prefix = str(p)[: m.start()]
        base = Path(prefix) if prefix.endswith(os.sep) else Path(prefix).parent
        for shard in expand_shards(p):
            out[os.path.relpath(shard, base)] = file_fingerprint(shard)
    for label, f in (extra or {}).items():
        out[label] = file_fingerprint(Path(f))
    return out


def _stat_form(fingerprint: str) -> bool:
    return fingerprint.startswith("size=")


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
    extra = {}
    if getattr(ds, "format", None) == "coco" and getattr(ds, "instances", None) is not None:
        extra[f"{Path(ds.instances).name} (--instances)"] = ds.instances
    return {
        "files": data_files_digest(path, extra) if path is not None else {},
        "rows": [h.hexdigest()[:16] for h in rows],
        "images": [h.hexdigest()[:16] for h in images],
    }


def _spans(diff: list[int], shard_size: int, n_total: int) -> str:
    parts = [f"{k * shard_size}-{min(n_total, (k + 1) * shard_size) - 1}" for k in diff[:3]]
    more = f" and {len(diff) - 3} more shards" if len(diff) > 3 else ""
    return ", ".join(parts) + more


def describe_change(old: dict[str, Any] | None, new: dict[str, Any], shard_size: int, n_total: int) -> str | None:
    """What differs between two fingerprints, in words (None when they agree)."""
    if not old:
        return (
            "the run records no fingerprint of its data (written by an older vlexplain), so a resume cannot be checked"
        )
    said = []
    of, nf = old.get("files", {}), new.get("files", {})
    changed = sorted(k for k in set(of) | set(nf) if of.get(k) != nf.get(k))
    kinds = [k for k in changed if k in of and k in nf and _stat_form(of[k]) != _stat_form(nf[k])]
    if kinds:  # fingerprinted by content then, by size and mtime now (or the reverse): not comparable
        how = "size and modification time" if _stat_form(of[kinds[0]]) else "content"
        return (
            f"the run fingerprinted {', '.join(kinds[:3])} by {how} (the rule of an older vlexplain), "
            "so a resume cannot be checked"
        )
    if changed:
        said.append(f"the data file{'s' if len(changed) > 1 else ''} {', '.join(changed[:3])} changed")
    for key, what in (
        ("rows", "the rows (captions, image paths, boxes) of samples"),
        ("images", "the image files (size or modification time) of samples"),
    ):
        a, b = old.get(key, []), new.get(key, [])
        diff = [k for k in range(max(len(a), len(b))) if k >= len(a) or k >= len(b) or a[k] != b[k]]
        if diff:
            said.append(f"{what} {_spans(diff, shard_size, n_total)} changed")
    return "; ".join(said) or None
