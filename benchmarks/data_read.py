"""Listing the pairs of a dataset (what `evaluate` does before it starts, and again to fingerprint it):
how much cheaper it is when images are not read.

* webdataset: an uncompressed ``.tar`` is listed from its member headers (images read by offset
  only when a pair is loaded) vs a ``.tar.gz`` shard, which must be decompressed as it streams;
* saved HF dataset: rows listed with the image column left encoded (what vlexplain does) vs
  decoding every image (what ``ds[i]`` does by default);
* the run fingerprint ``evaluate`` computes at every start (and resume) of a folder of ``.tar``
  shards: size and modification time per shard (what vlexplain does) vs a SHA-256 of every shard's
  content (a full read of the data, what it did before).

Prints CPU-time ratios measured in one run (the machine is shared: wall times are not comparable).

    python benchmarks/data_read.py [--n 1000] [--size 128] [--fingerprint-mb 200] [--only-fingerprint]
"""

from __future__ import annotations

import argparse
import io
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _png(rng: np.random.Generator, size: int) -> bytes:
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(b, "PNG")
    return b.getvalue()


def _cpu(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def fingerprint(mb: int) -> None:
    """CPU and wall time of the start-of-run fingerprint of ``mb`` MB of ``.tar`` shards (10 MB each)."""
    from vlexplain.eval import identity

    d = Path(tempfile.mkdtemp()) / "shards"
    d.mkdir()
    rng = np.random.default_rng(0)
    n_shards = max(1, mb // 10)
    for s in range(n_shards):
        with tarfile.open(d / f"{s:05d}.tar", "w") as tf:
            for i in range(100):  # 100 samples of 100 kB (incompressible bytes stand in for JPEGs)
                for ext, blob in (("jpg", rng.bytes(100_000)), ("txt", f"pair {s}-{i}".encode())):
                    ti = tarfile.TarInfo(f"{s:05d}{i:04d}.{ext}")
                    ti.size = len(blob)
                    tf.addfile(ti, io.BytesIO(blob))
    total = sum(p.stat().st_size for p in d.iterdir()) / 1e6

    def full_hash() -> dict[str, str]:  # the fingerprint before: every non-image file hashed by content
        return {p.name: identity._sha_file(p) for p in sorted(d.iterdir())}

    def timed(fn) -> tuple[float, float]:  # best of 3 (CPU s, wall s); the files sit in the page cache
        best = (float("inf"), float("inf"))
        for _ in range(3):
            c, w = time.process_time(), time.perf_counter()
            fn()
            best = min(best, (time.process_time() - c, time.perf_counter() - w))
        return best

    try:
        before = timed(full_hash)
        after = timed(lambda: identity.data_files_digest(d))
    finally:
        shutil.rmtree(d.parent)
    print(
        f"run fingerprint, {n_shards} shards ({total:.0f} MB): content hash {before[0] * 1e3:.0f} ms CPU "
        f"({before[1] * 1e3:.0f} ms wall), size + mtime {after[0] * 1e3:.2f} ms CPU ({after[1] * 1e3:.2f} ms wall) "
        f"-> {before[0] / max(after[0], 1e-6):.0f}x less CPU"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--fingerprint-mb", type=int, default=200, help="MB of shards to fingerprint (0: skip)")
    ap.add_argument("--only-fingerprint", action="store_true")
    a = ap.parse_args()
    if a.fingerprint_mb:
        fingerprint(a.fingerprint_mb)
    if a.only_fingerprint:
        return
    from vlexplain.data.pairs import open_pairs

    rng = np.random.default_rng(0)
    pngs = [_png(rng, a.size) for _ in range(a.n)]
    d = Path(tempfile.mkdtemp())
    for name, mode in (("plain.tar", "w"), ("packed.tar.gz", "w:gz")):
        with tarfile.open(d / name, mode) as tf:
            for i, data in enumerate(pngs):
                for ext, blob in (("png", data), ("txt", f"pair {i}".encode())):
                    ti = tarfile.TarInfo(f"{i:08d}.{ext}")
                    ti.size = len(blob)
                    tf.addfile(ti, io.BytesIO(blob))
    mb = sum(map(len, pngs)) / 2**20
    tar = _cpu(lambda: sum(1 for _ in open_pairs(d / "plain.tar").rows()))
    gz = _cpu(lambda: sum(1 for _ in open_pairs(d / "packed.tar.gz").rows()))
    print(
        f"webdataset, {a.n} pairs ({mb:.0f} MB of PNG): list .tar {tar * 1e3:.0f} ms CPU, .tar.gz {gz * 1e3:.0f} ms "
        f"CPU -> the header-only listing is {gz / tar:.1f}x cheaper"
    )
    try:
        import datasets
    except ImportError:
        print("saved HF dataset: skipped (pip install datasets)")
        return
    paths = []
    for i, data in enumerate(pngs):
        p = d / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        paths.append(str(p))
    ds = datasets.Dataset.from_dict({"image": paths, "caption": [f"pair {i}" for i in range(a.n)]})
    ds.cast_column("image", datasets.Image()).save_to_disk(str(d / "saved"))
    saved = datasets.load_from_disk(str(d / "saved"))
    ours = _cpu(lambda: sum(1 for _ in open_pairs(d / "saved").rows()))
    decoding = _cpu(lambda: sum(1 for i in range(len(saved)) if saved[i]["image"].load() is not None or True))
    print(
        f"saved HF dataset, {a.n} pairs: list without decoding {ours * 1e3:.0f} ms CPU, decoding every image "
        f"{decoding * 1e3:.0f} ms CPU -> {decoding / ours:.1f}x cheaper"
    )


if __name__ == "__main__":
    main()
