"""M2IB speed: the literal reference algorithm vs vlexplain's fast batched implementation.

Models (random weights, no download), CPU by default:

* ``vit-b-32``: a ViT-B/32-size Hugging Face CLIPModel; reference from tests/attribution/test_m2ib.py;
* ``rn50``: OpenCLIP ``RN50`` (ModifiedResNet, bottleneck after layer3: 14 x 14 x 1024);
* ``siglip-b-16``: OpenCLIP ``ViT-B-16-SigLIP`` (timm ViT-B/16, MAP head, 196 patch tokens; its
  SentencePiece tokenizer lives on the hub, so a stand-in callable maps CLIP BPE ids into its
  32 000-token vocabulary: the cost does not depend on which ids).

For rn50 / siglip-b-16 the reference is tests/support/m2ib_module_reference.py (the same literal algorithm,
hooking the tower's own block module). Measures seconds per pair (image map + text map) for the
reference and the fast version at batch 1, and of the fast version at larger batches; prints the
ratios measured in this run. Usage:

    python benchmarks/m2ib_speed.py [--models vit-b-32,rn50,siglip-b-16] [--steps 10] [--batches 1,8,32]
                                    [--device cuda] [--pairs 2] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.* imports

import vlexplain as vx
from tests.attribution.test_m2ib import reference_m2ib
from tests.support.m2ib_module_reference import reference_m2ib_module

TEXTS = ["a photo of a cat", "a red car parked on the street", "two dogs playing in the snow", "a bowl of soup"]


def build(device: str):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    raw = CLIPModel(CLIPConfig()).eval().to(device)  # defaults = ViT-B/32 size
    return raw


def build_open_clip(arch: str, device: str):
    """(raw OpenCLIP model, its DualEncoder); one model object serves both (vx freezes it per call)."""
    import open_clip

    torch.manual_seed(0)
    raw = open_clip.create_model(arch).eval().to(device)
    tok, text = None, getattr(raw, "text", raw)
    if text.token_embedding.num_embeddings != 49408:  # SigLIP: stand-in ids in its vocabulary
        from open_clip.tokenizer import SimpleTokenizer

        vocab, ctx = text.token_embedding.num_embeddings, text.context_length
        bpe = SimpleTokenizer(context_length=ctx)

        def tok(texts):  # CLIP BPE ids folded into the vocabulary, EOS = 1, padded with 1 to the context
            rows = [[i % (vocab - 2) + 2 for i in bpe.encode(t)][: ctx - 1] + [1] for t in texts]
            return torch.tensor([r + [1] * (ctx - len(r)) for r in rows])

        tok.pad_token_id = 1
    return raw, vx.load_model(raw, tokenizer=tok)


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


def time_reference_module(raw, model, n_pairs: int, device: str, steps: int) -> tuple[float, float]:
    """Seconds per pair of the module-hook reference (OpenCLIP towers), the model's own encoders."""
    g = torch.Generator().manual_seed(0)
    enc_i = lambda x: raw.encode_image(x, normalize=False)
    enc_t = lambda t: raw.encode_text(t, normalize=False)
    with _Clock() as c:
        for k in range(n_pairs):
            px = torch.randn(1, 3, *model.input_size, generator=g).to(device)
            tb = model.tokenize([TEXTS[k % len(TEXTS)]])
            ids = _own_ids(raw, model, tb)
            for modality, enc, other, x, xo in (("image", enc_i, enc_t, px, ids), ("text", enc_t, enc_i, ids, px)):
                tower = model.tower(modality)
                module = tower.block_modules()[tower.default_layer()]
                n_real = int(tb.attention_mask.sum()) if modality == "text" else None
                reference_m2ib_module(
                    enc, other, module, x, xo, beta=0.1, steps=steps, lr=1.0, S=10, seed=0, n_real=n_real
                )
            for p in raw.parameters():  # the reference leaves gradients in the model, as released
                p.grad = None
        _sync(device)
    return c.wall / n_pairs, c.cpu / n_pairs


def _own_ids(raw, model, tb):
    """The ids the model's own encode_text takes (CLIP text towers: padded to the context length)."""
    ctx = getattr(raw, "text", raw).context_length
    ids = tb.ids
    return torch.cat([ids, ids.new_zeros(1, ctx - ids.shape[1])], 1) if ids.shape[1] < ctx else ids


def time_fast(model, batch: int, n_batches: int, device: str, bf16: bool, steps: int = 10) -> tuple[float, float]:
    """Seconds per pair of vx.explain(method="m2ib") at this batch size."""
    g = torch.Generator().manual_seed(0)
    px = torch.randn(batch, 3, *model.input_size, generator=g).to(device)
    texts = [TEXTS[k % len(TEXTS)] for k in range(batch)]
    vx.explain(model, px[:1], texts[0], method="m2ib", steps=1)  # warm-up
    _sync(device)
    with _Clock() as c:
        for _ in range(n_batches):
            vx.explain(model, px, texts, method="m2ib", batch_size=batch, bf16=bf16, steps=steps)
        _sync(device)
    return c.wall / (n_batches * batch), c.cpu / (n_batches * batch)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(name: str, a: argparse.Namespace) -> dict:
    """One model: reference and fast timings, ratios from this run."""
    if name == "vit-b-32":
        raw, model = build(a.device), vx.load_model(build(a.device))
        ref = time_reference(raw, model, a.pairs, a.device) if a.steps == 10 else _ref_steps(raw, model, a)
    else:
        raw, model = build_open_clip({"rn50": "RN50", "siglip-b-16": "ViT-B-16-SigLIP"}[name], a.device)
        ref = time_reference_module(raw, model, a.pairs, a.device, a.steps)
    k = 0 if a.device.startswith("cuda") else 1
    res = {"reference_s_per_pair_b1": round(ref[k], 3), "wall_s_per_pair": {"reference_b1": round(ref[0], 2)}}
    for b in a.batches:
        f = time_fast(model, b, a.pairs if b == 1 else 1, a.device, a.bf16, a.steps)
        res[f"fast_s_per_pair_b{b}"] = round(f[k], 3)
        res[f"speedup_b{b}"] = round(ref[k] / f[k], 2)
        res["wall_s_per_pair"][f"fast_b{b}"] = round(f[0], 2)
    return res


def _ref_steps(raw, model, a):
    g = torch.Generator().manual_seed(0)
    with _Clock() as c:
        for k in range(a.pairs):
            px = torch.randn(1, 3, 224, 224, generator=g).to(a.device)
            ids = model.tokenize([TEXTS[k % len(TEXTS)]]).ids
            for modality in ("image", "text"):
                reference_m2ib(raw, "hf", modality, px, ids, layer=9, beta=0.1, steps=a.steps, lr=1.0, S=10, seed=0)
    return c.wall / a.pairs, c.cpu / a.pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pairs", type=int, default=2, help="pairs for the reference and fast batch-1 timing")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the fast version (CUDA)")
    ap.add_argument(
        "--models", default="vit-b-32,rn50,siglip-b-16", help="comma-separated: vit-b-32, rn50, siglip-b-16"
    )
    ap.add_argument("--steps", type=int, default=10, help="optimisation steps, the same for both (paper: 10)")
    ap.add_argument("--batches", default="1,8,32", help="batch sizes for the fast version")
    ap.add_argument("--out", default=str(Path(__file__).with_name("m2ib_speed.json")))
    a = ap.parse_args()
    a.batches = [int(b) for b in a.batches.split(",")]
    models = a.models.split(",")
    if models != ["vit-b-32"] or a.steps != 10 or a.batches != [1, 8, 32]:
        res = {
            "device": a.device if a.device != "cpu" else f"cpu ({torch.get_num_threads()} threads)",
            "clock": "wall" if a.device.startswith("cuda") else "process CPU seconds",
            "steps": a.steps,
            "noise_draws": 10,
        }
        for name in models:
            res[name] = measure(name, a)
            print(name, json.dumps(res[name]))
        out = Path(a.out)
        if out.name == "m2ib_speed.json":  # keep the ViT-B/32 record; the zoo run goes beside it
            out = out.with_name("m2ib_speed_zoo.json")
        out.write_text(json.dumps(res, indent=1))
        return
    legacy(a)


def legacy(a: argparse.Namespace) -> None:
    """The original ViT-B/32 run (default arguments with --models vit-b-32)."""
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
        "wall_s_per_pair": {
            "reference_b1": round(ref[0], 2),
            "fast_b1": round(fast1[0], 2),
            "fast_b8": round(fast8[0], 2),
            "fast_b32": round(fast32[0], 2),
        },
    }
    for k, v in res.items():
        print(f"{k:28s} {v}")
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
