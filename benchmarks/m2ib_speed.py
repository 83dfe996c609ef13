"""M2IB speed: the literal reference algorithm vs vlexplain's fast batched implementation.

Model: a ViT-B/32-size Hugging Face CLIPModel with random weights (no download), CPU by default.
Measures seconds per pair (image map + text map) for the reference and the fast version at
batch 1, and pairs per second of the fast version at batch 8 and 32; prints the ratios measured
in this run. Usage:

    python benchmarks/m2ib_speed.py [--device cuda] [--pairs 2] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import vlexplain as vx  # noqa: E402
from test_m2ib import reference_m2ib  # noqa: E402  (the literal reference lives in the tests)

TEXTS = ["a photo of a cat", "a red car parked on the street", "two dogs playing in the snow", "a bowl of soup"]


def build(device: str):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    raw = CLIPModel(CLIPConfig()).eval().to(device)  # defaults = ViT-B/32 size
    return raw


class _Clock:
    """Wall-clock and process CPU seconds (CPU time is robust to other load on a shared machine)."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *a):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def time_reference(raw, model, n_pairs: int, device: str) -> tuple[float, float]:
    """Seconds per pair (image + text map), one pair at a time, both encoders re-run every step."""
    g = torch.Generator().manual_seed(0)
    with _Clock() as c:
        for k in range(n_pairs):
            px = torch.randn(1, 3, 224, 224, generator=g).to(device)
            ids = model.tokenize([TEXTS[k % len(TEXTS)]]).ids
            for modality in ("image", "text"):
                reference_m2ib(raw, "hf", modality, px, ids, layer=9, beta=0.1, steps=10, lr=1.0, S=10, seed=0)
        _sync(device)
    return c.wall / n_pairs, c.cpu / n_pairs


def time_fast(model, batch: int, n_batches: int, device: str, bf16: bool) -> tuple[float, float]:
    """Seconds per pair of vx.explain(method="m2ib") at this batch size."""
    g = torch.Generator().manual_seed(0)
    px = torch.randn(batch, 3, 224, 224, generator=g).to(device)
    texts = [TEXTS[k % len(TEXTS)] for k in range(batch)]
    vx.explain(model, px[:1], texts[0], method="m2ib", steps=1)  # warm-up
    _sync(device)
    with _Clock() as c:
        for _ in range(n_batches):
            vx.explain(model, px, texts, method="m2ib", batch_size=batch, bf16=bf16)
        _sync(device)
    return c.wall / (n_batches * batch), c.cpu / (n_batches * batch)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pairs", type=int, default=2, help="pairs for the reference and fast batch-1 timing")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the fast version (CUDA)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("m2ib_speed.json")))
    a = ap.parse_args()
    raw = build(a.device)
    model = vx.load_model(build(a.device))
    ref = time_reference(raw, model, a.pairs, a.device)
    fast1 = time_fast(model, 1, a.pairs, a.device, a.bf16)
    fast8 = time_fast(model, 8, 1, a.device, a.bf16)
    fast32 = time_fast(model, 32, 1, a.device, a.bf16)
    k = 0 if a.device.startswith("cuda") else 1
    res = {
        "device": a.device if a.device != "cpu" else f"cpu ({torch.get_num_threads()} threads)",
        "clock": "wall" if k == 0 else "process CPU seconds",
        "reference_s_per_pair_b1": round(ref[k], 3),
        "fast_s_per_pair_b1": round(fast1[k], 3),
        "speedup_b1": round(ref[k] / fast1[k], 2),
        "fast_s_per_pair_b8": round(fast8[k], 3),
        "fast_s_per_pair_b32": round(fast32[k], 3),
        "fast_pairs_per_s_b8": round(1 / fast8[k], 3),
        "fast_pairs_per_s_b32": round(1 / fast32[k], 3),
        "speedup_b32_vs_reference": round(ref[k] / fast32[k], 2),
        "wall_s_per_pair": {"reference_b1": round(ref[0], 2), "fast_b1": round(fast1[0], 2),
                            "fast_b8": round(fast8[0], 2), "fast_b32": round(fast32[0], 2)},
    }
    for k, v in res.items():
        print(f"{k:28s} {v}")
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
