"""CPU seconds per pair of ``integrated_jacobians`` against the released ``exclip`` package.

Models: OpenCLIP ViT-B/32 and ViT-B/16 architectures with random weights
(``open_clip.create_model(ARCH, pretrained=None)``, seeded; no download). Both implementations run
the released defaults (interaction at the input of block 11 of both towers, 10 steps, an all-zero
image reference, the one-token text reference) on the same random image and caption, and the
matrices are compared (the released code's rows for the start and end tokens dropped).

Timed: ``time.process_time()`` (CPU seconds of this process, every thread) around

* the released code: ``OpenClipExplainer.explain`` for one pair (one backward pass per embedding
  dimension per tower, then the full token-channel x patch-channel product);
* ours, one pair: ``vx.interactions(model, image, caption)``;
* ours, a query against 8 captions: ``vx.interactions(model, image, captions)`` (one image, the
  image tower's Jacobian computed once), per pair.

Usage::

    python benchmarks/interactions_speed.py                 # ViT-B-32 and ViT-B-16, one thread
    python benchmarks/interactions_speed.py --archs ViT-B-32 --threads 2

Results go to ``benchmarks/interactions_speed.json`` (per arch, written as each finishes).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

#: a short caption: the released code holds (tokens x text width) x (patches x image width) float32
#: matrices, four at a time (ViT-B/16 with this caption: 5 x 512 x 197 x 768, 1.5 GB each)
CAPTION = "a red bus"
CAPTIONS = [
    CAPTION,
    "a dog running on the beach",
    "two people riding bicycles in a city street",
    "a red car",
    "a bowl of fruit on a wooden table",
    "an airplane in a blue sky",
    "a man playing guitar on stage",
    "a plate of food",
]


def cpu_seconds(fn):
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def run_arch(arch: str) -> dict:
    import open_clip
    from exclip.explanation import OpenClipExplainer

    import vlexplain as vx

    torch.manual_seed(0)
    raw = open_clip.create_model(arch, pretrained=None).eval()
    model = vx.load_model(raw)
    size = model.input_size[0]
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    tb = model.tokenize([CAPTION])
    ids = torch.zeros(1, 77, dtype=torch.long)
    ids[0, : tb.ids.shape[1]] = tb.ids[0]

    vx.interactions(model, image, "a cat", steps=2)  # warm-up (first-call allocations)
    ours, t_ours = cpu_seconds(lambda: vx.interactions(model, image, CAPTION))
    many, t_many = cpu_seconds(lambda: vx.interactions(model, image, CAPTIONS, batch_size=8))

    ex = OpenClipExplainer(raw, image_dim=size, text_seq_len=77, device=torch.device("cpu"))
    ref, t_ref = cpu_seconds(lambda: ex.explain(ids, image, text_layer=11, image_layer=11, N=10))
    ex.reset_attribution()
    ref = ref[1:-1]
    diff = float((ours.matrix - ref).abs().max())
    return {
        "arch": arch,
        "grid": list(ours.matrix.shape[1:]),
        "tokens": len(ours.tokens),
        "exclip_cpu_s_per_pair": round(t_ref, 3),
        "ours_cpu_s_per_pair": round(t_ours, 3),
        "ours_cpu_s_per_pair_1_image_8_captions": round(t_many / len(CAPTIONS), 3),
        "speedup": round(t_ref / t_ours, 1),
        "speedup_1_image_8_captions": round(t_ref / (t_many / len(CAPTIONS)), 1),
        "max_abs_diff": diff,
        "max_abs_entry": float(ref.abs().max()),
        "mode": "auto",
        "rows_equal_first_caption": bool(
            torch.allclose(many[0].matrix, ours.matrix, atol=1e-5 * float(ref.abs().max()))
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).with_name("interactions_speed.json")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": args.threads,
        "torch": torch.__version__,
        "runs": [],
    }
    for arch in args.archs:
        r = run_arch(arch)
        results["runs"].append(r)
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(
            f"{arch}: exclip {r['exclip_cpu_s_per_pair']:.2f} CPU s/pair, ours {r['ours_cpu_s_per_pair']:.2f} "
            f"({r['speedup']}x); one image x 8 captions {r['ours_cpu_s_per_pair_1_image_8_captions']:.2f} "
            f"({r['speedup_1_image_8_captions']}x); max |diff| {r['max_abs_diff']:.2e} of entries up to "
            f"{r['max_abs_entry']:.2e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
