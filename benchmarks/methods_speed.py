"""Seconds per pair of every registered attribution method, at batch 1 and batch 8, on the CPU.

Model: a ViT-B/32-size Hugging Face CLIP (``CLIPModel(CLIPConfig())``: 12 + 12 blocks, width 768 /
512, 224 px images) with random weights, loaded through ``vx.load_model``. Every method runs
with its default options on both sides it applies to; the time is the wall-clock time of
``vx.explain`` divided by the number of pairs.

Usage::

    python benchmarks/methods_speed.py            # 8 pairs per setting
    python benchmarks/methods_speed.py --quick    # 1 pair at batch 1, 8 pairs at batch 8
    python benchmarks/methods_speed.py --methods rise kernel_shap --budget 60
    python benchmarks/methods_speed.py --quick --update --methods m2ib --budget 3000  # add to the file

A batch-8 measurement whose time predicted from batch 1 exceeds ``--budget`` seconds is
skipped and recorded as such. Results are written to ``benchmarks/methods_speed.json`` after each
method, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

TEXTS = [
    "a photo of a cat",
    "a dog running on the beach",
    "two people riding bicycles in a city street",
    "a red car",
    "a bowl of fruit on a wooden table",
    "an airplane in a blue sky",
    "a man playing guitar on stage",
    "a plate of food",
]


def build_model():
    """ViT-B/32-size CLIP with random weights (seeded), as a vlexplain DualEncoder on the CPU."""
    from transformers import CLIPConfig, CLIPModel

    import vlexplain as vx

    torch.manual_seed(0)
    return vx.load_model(CLIPModel(CLIPConfig()).eval())


def make_inputs(model, n: int) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, *model.input_size, generator=g)
    mean = torch.tensor(model.mean).view(3, 1, 1)
    std = torch.tensor(model.std).view(3, 1, 1)
    return (x - mean) / std, [TEXTS[i % len(TEXTS)] for i in range(n)]


def time_method(model, name: str, batch: int, pairs: int) -> dict:
    """Wall-clock and CPU seconds per pair of ``vx.explain`` over ``pairs`` pairs in batches of ``batch``.

    CPU time (this process, all threads) is reported beside wall time because on a shared machine
    the wall time also counts the time other processes held the cores.
    """
    import vlexplain as vx

    images, texts = make_inputs(model, pairs)
    t0, c0 = time.perf_counter(), time.process_time()
    out = vx.explain(model, images, texts, method=name, seed=0, batch_size=batch)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert len(out) == pairs
    return {"seconds_per_pair": dt / pairs, "cpu_seconds_per_pair": dc / pairs, "pairs": pairs}


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def print_table(results: dict) -> None:
    print("\nseconds per pair, wall (CPU); speed-up of batch 8 over batch 1 in CPU time")
    print(f"{'method':<22}{'batch 1':>20}{'batch 8':>20}{'speed-up':>10}")
    for name, r in results.items():
        cells: list[str] = []
        for key in ("batch_1", "batch_8"):
            v = r.get(key, {})
            cells.append(
                f"{v['seconds_per_pair']:.3f} ({v['cpu_seconds_per_pair']:.3f})"
                if "seconds_per_pair" in v
                else "skipped"
            )
        b1, b8 = r.get("batch_1", {}), r.get("batch_8", {})
        sp = (
            f"{b1['cpu_seconds_per_pair'] / b8['cpu_seconds_per_pair']:.2f}x"
            if "seconds_per_pair" in b1 and "seconds_per_pair" in b8
            else "-"
        )
        print(f"{name:<22}{cells[0]:>20}{cells[1]:>20}{sp:>10}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 pair at batch 1 and 8 pairs at batch 8")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per setting without --quick (a multiple of 8)")
    ap.add_argument("--methods", nargs="*", default=None, help="methods to time (default: all registered)")
    ap.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="skip a batch-8 run predicted (from batch 1) to take longer than this many seconds",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default=str(Path(__file__).with_name("methods_speed.json")))
    ap.add_argument(
        "--update",
        action="store_true",
        help="keep the other methods' results already in --out (each entry records its own date)",
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    import vlexplain as vx

    names = args.methods or vx.list_methods()
    unknown = sorted(set(names) - set(vx.list_methods()))
    if unknown:
        print(f"unknown method(s): {', '.join(unknown)}; available: {', '.join(vx.list_methods())}", file=sys.stderr)
        return 2
    model = build_model()
    with torch.no_grad():  # warm up allocator and kernels once
        x, t = make_inputs(model, 1)
        model.encode_image(x), model.encode_text(model.tokenize(t))
    pairs_b1 = 1 if args.quick else args.pairs
    pairs_b8 = 8 if args.quick else max(8, args.pairs)
    out_path = Path(args.out)
    data = {
        "model": "transformers CLIPModel(CLIPConfig()) (ViT-B/32 size), random weights, float32",
        "device": "cpu",
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "options": "defaults; both sides each method applies to",
        "results": {},
    }
    if args.update and out_path.exists():
        data["results"] = json.loads(out_path.read_text()).get("results", {})
    for name in names:
        r: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick}
        data["results"][name] = r
        r["batch_1"] = time_method(model, name, 1, pairs_b1)
        predicted = r["batch_1"]["seconds_per_pair"] * pairs_b8
        if predicted > args.budget:
            r["batch_8"] = {"skipped": f"predicted {predicted:.0f} s > budget {args.budget:.0f} s"}
        else:
            r["batch_8"] = time_method(model, name, 8, pairs_b8)
        print(f"{name}: {json.dumps(r)}", flush=True)
        write_json(out_path, data)
    print_table(data["results"])
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
