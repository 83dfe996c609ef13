"""Why M2IB's text side is at chance on the shapes model at its default layer.

For the two-word captions of the shapes benchmark ("a boat", ...), prints

1. how much the image-text cosine falls when the hidden state of one position ([SOS], "a", the
   category word, [EOS]) after block L is replaced by N(0, 1) noise (what M2IB's bottleneck does
   at lam = 0), for L = -1 (the input of block 0) .. the last block;
2. M2IB's nats per content token at each layer and how often the category word gets the most.

Run: ``python benchmarks/m2ib_text_probe.py`` (about a minute on a CPU).
"""

from __future__ import annotations

import torch

import vlexplain as vx
from vlexplain.eval.benchmarks.shapes import SCENE_SIZE, shapes_query, shapes_seeds
from vlexplain.eval.runner import pair_seed
from vlexplain.testbeds.shapes import render_scene


def main(n: int = 64, draws: int = 10) -> None:
    torch.manual_seed(0)
    model = vx.load_model("testbed:shapes")
    seeds = shapes_seeds(n)
    scenes = [render_scene(s, size=SCENE_SIZE) for s in seeds]
    caps = [shapes_query(sc)[1] for sc in scenes]
    keep = [i for i, c in enumerate(caps) if len(c.split()) == 2]
    caps, scenes = [caps[i] for i in keep], [scenes[i] for i in keep]
    pixels = torch.stack([model.preprocess(sc.pil()) for sc in scenes])
    texts = model.tokenize(caps)
    tower = model.text
    print(f"{len(caps)} two-word captions of {n} benchmark pairs")
    with torch.no_grad():
        img = model.encode_image(pixels)
        score = (model.encode_text(texts) * img).sum(-1)
        print(f"mean cosine {score.mean():.3f}")
        print("cosine drop when one position's state after block L is replaced by N(0, 1) noise:")
        print("  L    [SOS]    a      word   [EOS]")
        for layer in range(-1, tower.num_blocks):
            h = tower.encode(texts, stop=layer)
            drops = []
            for pos in range(4):
                d = 0.0
                for _ in range(draws):
                    z = h.clone()
                    z[:, pos] = torch.randn_like(z[:, pos])
                    e = torch.nn.functional.normalize(tower.encode(texts, start=layer, hidden=z), dim=-1)
                    d += float((score - (e * img).sum(-1)).mean()) / draws
                drops.append(d)
            print(f"  {layer:>2}  " + "  ".join(f"{d:6.3f}" for d in drops))
    print(
        "M2IB (defaults otherwise) at each text layer: mean nats of 'a' and of the word, share where the word gets more"
    )
    for layer in range(-1, tower.num_blocks):
        exps = vx.explain(
            model, pixels, caps, method="m2ib", sides=["text"], text_layer=layer, seed=[pair_seed(0, i) for i in keep]
        )
        ts = torch.stack([e.token_scores for e in exps])  # (N, 2): "a", word
        default = " (default)" if layer == tower.default_layer() else ""
        print(
            f"  text_layer {layer:>2}{default}: 'a' {ts[:, 0].mean():.3f}  word {ts[:, 1].mean():.3f}  "
            f"word first {float((ts[:, 1] > ts[:, 0]).float().mean()):.0%}"
        )


if __name__ == "__main__":
    main()
