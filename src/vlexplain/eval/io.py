"""Crash-safe files of an evaluation run: atomic writes, shard names, reading results back.

Every file is written to a temporary name in its final folder, flushed, fsynced and renamed with
``os.replace``, so a reader (or a resumed run) sees either the old file or the complete new
one, never a partial file, even after SIGKILL or a power cut.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..outdir import file_mode

CONFIG = "config.json"
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
MAPS_DIR = "maps"
_SHARD_RE = re.compile(r"^metrics-(\d{6,})\.parquet$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the finished file to ``path`` atomically.

    The temporary file lives in the same folder (so the rename is atomic) and starts with ``.tmp-``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())  # mkstemp creates 0600; give the usual permissions
        write(tmp)
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, w)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def shard_name(k: int) -> str:
    return f"metrics-{k:06d}.parquet"


def maps_name(k: int) -> str:
    return f"maps-{k:06d}.safetensors"


def finished_shards(run_dir: str | os.PathLike) -> dict[int, Path]:
    """Shard index -> metrics file, for every finished shard (its metrics file exists)."""
    d = Path(run_dir) / SHARD_DIR
    out = {}
    if d.is_dir():
        for p in d.iterdir():
            m = _SHARD_RE.match(p.name)
            if m:
                out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def remove_temporaries(run_dir: str | os.PathLike) -> int:
    """Delete leftovers of writes that were interrupted (``.tmp-*``); returns how many."""
    n = 0
    for sub in ("", SHARD_DIR, MAPS_DIR):
        d = Path(run_dir) / sub
        if d.is_dir():
            for p in d.glob(".tmp-*"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def load_results(run_dir: str | os.PathLike):
    """All per-sample rows of a run as one ``pyarrow.Table``, ordered by sample index then method."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in finished_shards(run_dir).values()]
    if not tables:
        return pa.table({"index": pa.array([], pa.int64()), "method": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="default")


def load_maps(run_dir: str | os.PathLike, indices: set[int] | None = None) -> dict[str, Any]:
    """Saved maps as a flat dict ``"INDEX.METHOD.image_map"`` etc. -> tensor (tokens: list of str).

    Only the shards holding ``indices`` are read when given.
    """
    from safetensors import safe_open

    out: dict[str, Any] = {}
    d = Path(run_dir) / MAPS_DIR
    if not d.is_dir():
        return out
    for p in sorted(d.glob("maps-*.safetensors")):
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            for key in f.keys():
                if indices is None or int(key.split(".", 1)[0]) in indices:
                    out[key] = f.get_tensor(key)
            for key, v in meta.items():
                if key.endswith(".tokens") and (indices is None or int(key.split(".", 1)[0]) in indices):
                    out[key] = json.loads(v)
    return out
