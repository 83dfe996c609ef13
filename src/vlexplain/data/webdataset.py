"""Webdataset shards as OpenCLIP and img2dataset write them: ``.tar`` files whose members are grouped
into samples by key (``00000042.jpg``, ``00000042.txt``, ``00000042.json`` form sample ``00000042``).

The image is the sample's ``jpg`` / ``jpeg`` / ``png`` / ``webp`` (or the extension named by
``image_key``); the caption its ``txt``, else the ``caption`` / ``text`` field of its ``json`` (or the
extension / json field named by ``caption_key``). A ``json`` ``boxes`` field is read as ground truth.

Reading streams shard by shard. In an uncompressed ``.tar`` only the member headers are read while
listing the pairs; an image's bytes are read (by offset) when its pair is loaded, so a resumed
evaluation reads nothing of the shards' finished samples but their headers. Compressed shards
(``.tar.gz``) are decompressed as they stream, images held in memory until their pair is used.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from .rows import Captions, Columns, LazyBytes, MissingImage, PairRow, check_boxes

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's rule: key = path up to the first dot
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(source: Path) -> list[Path]:
    """A ``.tar`` file, a folder of shards, or a brace pattern ``shards/{000..009}.tar`` -> shard paths."""
    s = str(source)
    m = _BRACE.search(s)
    if m:
        a, b = m.group(1), m.group(2)
        width = len(a) if a.startswith("0") or len(a) == len(b) else 0
        shards = [Path(s[: m.start()] + str(k).zfill(width) + s[m.end() :]) for k in range(int(a), int(b) + 1)]
        missing = [p for p in shards if not p.is_file()]
        if missing:
            raise InputError(f"{s}: {len(missing)} of {len(shards)} shards are missing (first: {missing[0]})")
        return shards
    if source.is_dir():
        shards = sorted(
            p
            for p in source.iterdir()
            if p.name.lower().endswith((".tar", ".tar.gz", ".tgz")) and not p.name.startswith(".")
        )
        if not shards:
            raise InputError(f"{source}: no .tar shards in this folder")
        return shards
    return [source]


class WebdatasetReader:
    """Rows of webdataset shards (see the module docstring)."""

    def __init__(self, source: Path, columns: Columns):
        self.shards = expand_shards(source)
        self.columns = columns
        self.stats: dict[str, int] = {"shards": len(self.shards)}

    def describe(self) -> dict[str, Any]:
        return {
            "shards": [str(p.resolve()) for p in self.shards]
            if len(self.shards) <= 8
            else f"{len(self.shards)} shards: {self.shards[0].name} .. {self.shards[-1].name}"
        }

    def rows(self, captions: Captions) -> Iterator[PairRow]:
        i = 0
        ik, ck = self.columns.image, self.columns.caption
        for shard in self.shards:
            for key, files in _samples(shard):
                where = f"{shard}:{key}"
                meta = _json(files.get("json"), where)
                img_ext = next((e for e in ([ik.lower()] if ik else IMAGE_EXTS) if e in files), None)
                image: Any = (
                    files[img_ext]
                    if img_ext
                    else MissingImage(f"{where}: no image in this sample (members: {', '.join(sorted(files))})")
                )
                text = _caption(files, meta, ck, where)
                boxes = check_boxes(meta.get(self.columns.boxes or "boxes"), where)
                extras: dict[str, Any] = {"key": key, "shard": shard.name}
                if text == "" and ck is None and "txt" not in files:
                    extras["caption_problem"] = (
                        f"no caption in this sample (members: {', '.join(sorted(files))}; "
                        "expected a .txt member or a caption / text field in its .json)"
                    )
                caps = captions(text, where, ck or "txt")
                for j, cap in enumerate(caps):
                    ex = {**extras, "caption_index": j} if len(caps) > 1 else extras
                    yield PairRow(i, cap, image, where, boxes, None, ex)
                    i += 1


def _text(v: Any) -> str:
    data = v.read() if isinstance(v, LazyBytes) else v
    return data.decode("utf-8", errors="replace").strip()


def _json(v: Any, where: str) -> dict[str, Any]:
    if v is None:
        return {}
    try:
        obj = json.loads(_text(v))
    except json.JSONDecodeError as e:
        raise InputError(f"{where}.json: invalid JSON ({e.msg})") from None
    return obj if isinstance(obj, dict) else {}


def _caption(files: dict[str, Any], meta: dict[str, Any], ck: str | None, where: str) -> Any:
    if ck is not None:
        if ck.lower() in files:
            return _text(files[ck.lower()])
        if ck in meta:
            return meta[ck]
        raise InputError(f"{where}: no {ck!r} member or json field (members: {', '.join(sorted(files))})")
    if "txt" in files:
        return _text(files["txt"])
    for k in ("caption", "text", "captions"):
        if k in meta:
            return meta[k]
    return ""


def _samples(shard: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, {extension: bytes or LazyBytes})`` per sample, in shard order."""
    streaming = not shard.name.lower().endswith(".tar")
    try:
        tf = tarfile.open(shard, "r|*" if streaming else "r:")
    except (tarfile.TarError, OSError) as e:
        raise InputError(f"{shard}: not a readable tar shard ({e})") from None
    key: str | None = None
    files: dict[str, Any] = {}
    try:
        while True:
            try:
                m = tf.next()
            except tarfile.TarError as e:
                raise InputError(f"{shard}: corrupt tar shard ({e})") from None
            if m is None:
                break
            if not m.isfile():
                continue
            name = m.name
            while name.startswith("./"):  # `tar cf shard.tar .` writes ./KEY.jpg
                name = name[2:]
            hit = _KEY.match(name)
            if not hit or any(part.startswith(".") for part in name.split("/")):
                continue  # hidden files (.DS_Store, ._KEY.jpg) are not samples
            k, ext = hit.group(1), hit.group(2).lower()
            if k != key:
                if key is not None:
                    yield key, files
                key, files = k, {}
            small = ext in ("txt", "json", "cls") or streaming
            if small:
                f = tf.extractfile(m)
                files[ext] = f.read() if f is not None else b""
            else:
                files[ext] = LazyBytes(str(shard), m.offset_data, m.size)
            if not streaming:
                tf.members = []  # type: ignore[attr-defined]  # headers handled: do not keep them all in memory
        if key is not None:
            yield key, files
    finally:
        tf.close()
