"""Audit heads, mean-ablate them, fine-tune with right-for-the-right-reasons; the repair command."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vlexplain as vx
from vlexplain.errors import InputError
from vlexplain.repair.decompose import _block
from vlexplain.repair.heads import _projection, head_means, mean_ablate
from vlexplain.repair.rrr import patch_fractions, rrr_penalty


def test_rrr_penalty_by_hand():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = True  # a quarter of patch (0, 0) of a 2 x 2 grid
    masks[1, :2, :2] = True  # all of patch (0, 0)
    frac = patch_fractions(masks, (2, 2))
    assert frac[0, 0, 0] == 0.25 and frac[1, 0, 0] == 1.0 and frac[:, 1].sum() == 0
    maps = torch.tensor([[[2.0, 2.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 3.0]]])
    # image 0: 0.25 * 2 / 4 = 0.125; image 1: 1 * 1 / 4 = 0.25; mean 0.1875
    assert rrr_penalty(maps, frac).item() == pytest.approx(0.1875, abs=1e-6)


def test_rrr_penalty_alone_trains_the_image_tower():
    from vlexplain.concepts.relevance import Templates
    from vlexplain.concepts.train import _load_batch
    from vlexplain.repair.data import training_data
    from vlexplain.repair.rrr import RRRLoss

    model = vx.load_model("testbed:spurious")
    ds = training_data("spurious:8", model)
    loss = RRRLoss(ds, ds.classes, 1.0, Templates("a {class}", "{descriptor}"))
    px, y = _load_batch(model, ds, list(range(4)), model.device)
    out = loss(model, px, y, list(range(4)))
    assert 0 < out.extra["rrr"].item() < 1
    params = [p for p in model.image.parameters()]
    grads = torch.autograd.grad(out.extra["rrr"], params, allow_unused=True)
    moved = [g for g in grads if g is not None and g.abs().sum() > 0]
    assert moved, "the explanation penalty sends no gradient to the image tower"


@pytest.mark.parametrize("key", ["hf-clip", "open_clip-vit", "open_clip-timm-vit", "open_clip-eva", "hf-siglip"])
def test_mean_ablation_replaces_a_head_by_its_mean(key, family_model):
    base = family_model(key)
    model = copy.deepcopy(base)
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(6, 3, *model.input_size, generator=g)
    x = torch.randn(2, 3, *model.input_size, generator=g)
    layer, head = model.image.num_blocks - 1, 1
    means = head_means(model, ref, [(layer, head)])
    tower = model.image
    with torch.no_grad():
        # the mean by hand: the head's slice of the attention output, at the row the head reads
        hr = tower.encode(ref, stop=layer - 1)
        _, zr, _, H, _ = _block(tower, layer, hr, ref, False)
        D = zr.shape[-1]
        # CLIP, OpenCLIP and EVA read the class token; the timm ViT averages its patch tokens (after
        # 2 register tokens); SigLIP pools every token with attention
        zz = {"open_clip-timm-vit": zr[:, 2:].mean(1), "hf-siglip": zr.mean(1)}.get(key, zr[:, 0])
        assert torch.allclose(means[(layer, head)], zz.mean(0)[head * (D // H) : (head + 1) * (D // H)], atol=1e-6)
        h = tower.encode(x, stop=layer - 1)
        _, z, branch, H, _ = _block(tower, layer, h, x, False)
        mask = torch.zeros(D)
        mask[head * (D // H) : (head + 1) * (D // H)] = 1
        before = branch(z)
        part = branch(z * mask) - branch(torch.zeros_like(z))
        mu = torch.zeros(D)
        mu[head * (D // H) : (head + 1) * (D // H)] = means[(layer, head)]
        shift = branch(mu.expand_as(z)) - branch(torch.zeros_like(z))
    mean_ablate(model, means)
    with torch.no_grad():
        _, z2, branch2, _, _ = _block(model.image, layer, h, x, False)
        after = branch2(z2)
    assert torch.allclose(after, before - part + shift, atol=1e-5)
    lin = _projection(model, layer)
    assert lin.weight[:, head * (D // H) : (head + 1) * (D // H)].abs().max() == 0


def _badge_pairs(n=4):
    from vlexplain.repair.data import audit_pairs

    return audit_pairs(f"spurious:{n}")


def test_head_changes_sum_to_the_true_reliance():
    from vlexplain.repair.heads import audit_heads, score_changes

    model = vx.load_model("testbed:spurious")
    pairs = _badge_pairs()
    names, where, delta = score_changes(model, pairs)
    rel = pairs.true_reliance(model)
    assert np.allclose(delta.sum(1), rel, atol=1e-5)  # the parts' changes add up to the score's change
    audit = audit_heads(model, pairs)
    assert len(audit.rows) == 12  # 3 blocks x 4 heads
    firsts = [r.focus[0] for r in audit.rows]
    assert firsts == sorted(firsts, reverse=True)
    r = audit.rows[0]
    k = names.index(f"layer {r.layer} head {r.head}")
    assert r.focus[0] == pytest.approx(delta[:4, k].mean())  # the aligned pairs come first


def _run(args):
    from vlexplain.cli import main

    return main(args)


def test_audit_commands(tmp_path, capsys):
    assert (
        _run(
            [
                "audit",
                "heads",
                "--model",
                "testbed:spurious",
                "--data",
                "spurious:3",
                "--top",
                "3",
                "--out",
                str(tmp_path / "h"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| 1 | layer" in out and (tmp_path / "h" / "heads.json").is_file()
    args = ["audit", "layers", "--model", "testbed:spurious", "--reference", "testbed:shapes", "--data", "spurious:3"]
    assert _run(args + ["--betas", "1", "--layers", "0,1", "--methods", "m2ib,gradcam"]) == 0
    out = capsys.readouterr().out
    assert "| m2ib | 0 | 1 |" in out and "| m2ib | 1* | 1 |" in out and "| gradcam | 1* | – |" in out


def test_repair_ablate_heads_writes_a_loadable_model(tmp_path, capsys):
    out = tmp_path / "fixed"
    assert (
        _run(
            [
                "repair",
                "--model",
                "testbed:spurious",
                "--method",
                "ablate_heads",
                "--data",
                "spurious:4",
                "--heads",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    spec = capsys.readouterr().out.strip().splitlines()[-1]
    assert spec == f"testbed:shapes@{out.resolve()}"
    info = json.loads((out / "repair.json").read_text())
    assert len(info["heads"]) == 2 and (out / "audit_heads.md").is_file()
    # the same ablation in memory gives the same embeddings as the loaded directory
    from vlexplain.repair.data import audit_pairs
    from vlexplain.repair.heads import audit_heads

    mem = vx.load_model("testbed:spurious")
    pairs = audit_pairs("spurious:4")
    heads = audit_heads(mem, pairs).top(2)
    assert [list(h) for h in heads] == info["heads"]
    mean_ablate(mem, head_means(mem, pairs.pixels(mem, clean=True), heads))
    loaded = vx.load_model(spec)
    px = pairs.pixels(mem)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(px), mem.encode_image(px), atol=1e-6)
        assert not torch.allclose(vx.load_model("testbed:spurious").encode_image(px), mem.encode_image(px), atol=1e-4)
    assert vx.load_model(str(out)).name  # the bare directory loads too


@pytest.mark.parametrize("method", ["rrr", "deal", "control"])
def test_repair_fine_tuning_runs_share_one_loop(method, tmp_path, capsys):
    out = tmp_path / method
    args = ["repair", "--model", "testbed:spurious", "--method", method, "--data", "spurious:16"]
    args += ["--explanation", "gradient"] if method == "rrr" else []  # relevance: test_rrr_penalty_alone_...
    assert _run(args + ["--steps", "2", "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    spec = capsys.readouterr().out.strip().splitlines()[-1]
    header = (out / "training" / "log.csv").read_text().splitlines()[0].split(",")
    assert ("rrr" in header) == (method == "rrr")
    assert json.loads((out / "repair.json").read_text())["config"]["explanation"] == (
        "gradient" if method == "rrr" else "relevance"
    )
    cfg = json.loads((out / "training" / "config.json").read_text())
    assert (cfg["lambda_sep"], cfg["lambda_con"]) == ((0.1, 0.01) if method == "deal" else (0.0, 0.0))
    model = vx.load_model(spec)
    px = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model.encode_image(px), vx.load_model("testbed:spurious").encode_image(px))


def _jsonl(tmp_path, rows, name):
    p = tmp_path / f"{name}.jsonl"
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    cases = [
        # a tower without attention heads
        (["repair", "--model", "offline", "--method", "ablate_heads", "--data", "spurious:2"], "attention heads"),
        (["audit", "heads", "--model", "offline", "--data", "spurious:2"], "attention heads"),
        # rrr without masks
        (
            [
                "repair",
                "--model",
                "testbed:spurious",
                "--method",
                "rrr",
                "--data",
                str(
                    _jsonl(tmp_path, [{"image": "im0.png", "label": "a"}, {"image": "im1.png", "label": "b"}], "nomask")
                ),
            ],
            "needs cue masks",
        ),
        # data without the groups a repair needs: one class; pairs without their cue's mask
        (
            [
                "repair",
                "--model",
                "testbed:spurious",
                "--method",
                "control",
                "--data",
                str(
                    _jsonl(
                        tmp_path, [{"image": "im0.png", "label": "a"}, {"image": "im1.png", "label": "a"}], "oneclass"
                    )
                ),
            ],
            "single class",
        ),
        (
            [
                "repair",
                "--model",
                "testbed:spurious",
                "--method",
                "ablate_heads",
                "--data",
                str(_jsonl(tmp_path, [{"image": "im0.png", "caption": "a"}], "nocue")),
            ],
            "lacks image, caption or cue_mask",
        ),
        (["repair", "--model", "testbed:spurious", "--method", "prune", "--data", "spurious:2"], "--method must be"),
        (
            [
                "repair",
                "--model",
                "testbed:spurious",
                "--method",
                "rrr",
                "--explanation",
                "saliency",
                "--data",
                "spurious:2",
            ],
            "--explanation must be",
        ),
    ]
    for args, needle in cases:
        code = _run(args + ["--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, args
        assert len(err) == 1 and needle in err[0], err
        assert not out.exists()
    with pytest.raises(vx.MethodError, match="attention heads"):
        vx.decompose(vx.load_model("offline"), torch.zeros(1, 3, 224, 224))
    with pytest.raises(InputError):
        from vlexplain.repair.run import repair

        repair(vx.load_model("testbed:spurious"), "ablate_heads", "spurious:2", tmp_path / "x", heads=0)
