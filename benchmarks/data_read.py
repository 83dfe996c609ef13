"""Listing the pairs of a dataset (what `evaluate` does before it starts, and again to fingerprint it):
how much cheaper it is when images are not read.

* webdataset: an uncompressed ``.tar`` is listed from its member headers (images read by offset
  only when a pair is loaded) vs a ``.tar.gz`` shard, which must be decompressed as it streams;
* saved HF dataset: rows listed with the image column left encoded (what vlexplain does) vs
  decoding every image (what ``ds[i]`` does by default).

Prints CPU-time ratios measured in one run (the machine is shared: wall times are not comparable).

    python benchmarks/data_read.py [--n 1000] [--size 128]
"""

from __future__ import annotations

import argparse
import io
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args()
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
    print(f"webdataset, {a.n} pairs ({mb:.0f} MB of PNG): list .tar {tar * 1e3:.0f} ms CPU, .tar.gz {gz * 1e3:.0f} ms "
          f"CPU -> the header-only listing is {gz / tar:.1f}x cheaper")
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
    print(f"saved HF dataset, {a.n} pairs: list without decoding {ours * 1e3:.0f} ms CPU, decoding every image "
          f"{decoding * 1e3:.0f} ms CPU -> {decoding / ours:.1f}x cheaper")


if __name__ == "__main__":
    main()
