"""Which token the CLIP-native methods' text side favours on the shapes model, by number of blocks.

For the two-word captions of the shapes benchmark's 64 pairs ("a boat", ...), prints how often the
category word gets the higher score of the two content tokens ("a" vs the word), for grad_eclip
(``text_blocks``) and legrad (``blocks``) over the last 1, 2 and 3 blocks of the 3-block text
tower, beside chefer and m2ib at their defaults. Chance is 50 %; ties (both scores equal, e.g. both
zero after a ReLU) are counted apart.

Run: ``python benchmarks/clip_native_text_probe.py`` (a minute or two on a CPU).
"""

from __future__ import annotations

import torch

import vlexplain as vx
from vlexplain.eval.benchmarks.shapes import SCENE_SIZE, shapes_query, shapes_seeds
from vlexplain.testbeds.shapes import render_scene


def main(n: int = 64) -> None:
    model = vx.load_model("testbed:shapes")
    scenes = [render_scene(s, size=SCENE_SIZE) for s in shapes_seeds(n)]
    caps = [shapes_query(sc)[1] for sc in scenes]
    keep = [i for i, c in enumerate(caps) if len(c.split()) == 2]
    caps, scenes = [caps[i] for i in keep], [scenes[i] for i in keep]
    pixels = torch.stack([model.preprocess(sc.pil()) for sc in scenes])
    print(f"{len(caps)} two-word captions of {n} benchmark pairs; share where the category word scores highest")
    runs = [("chefer", {}), ("m2ib", {})]
    runs += [("grad_eclip", {"text_blocks": b}) for b in (1, 2, 3)]
    runs += [("legrad", {"blocks": b}) for b in (1, 2, 3)]
    for name, opts in runs:
        es = vx.explain(model, pixels, caps, method=name, sides=["text"], seed=0, **opts)
        wins = [float(e.token_scores[-1] > e.token_scores[0]) for e in es]
        ties = [float(e.token_scores[-1] == e.token_scores[0]) for e in es]
        label = name + "".join(f" {k}={v}" for k, v in opts.items())
        print(f"  {label:<26} {100 * sum(wins) / len(wins):5.1f} %   (ties {100 * sum(ties) / len(ties):.1f} %)")


if __name__ == "__main__":
    main()
