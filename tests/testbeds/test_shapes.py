"""The shapes-world testbed, its shipped CLIP, and the photo grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vlexplain as vx
from vlexplain.errors import InputError
from vlexplain.testbeds.grids import PHOTOS, make_grid, photo_text
from vlexplain.testbeds.shapes import BACKGROUNDS, mask_box, render_scene
from vlexplain.testbeds.shapes_categories import (
    CATEGORIES,
    COLOURS,
    all_texts,
    article,
    category_caption,
    concept_set,
    write_concept_set,
)

SEEDS = list(range(40))


# --- scenes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128])
def test_part_masks_equal_rendered_pixels(size):
    for seed in SEEDS[:20]:
        s = render_scene(seed, size=size)
        covered = np.zeros(s.labels.shape, dtype=int)
        for o in s.objects:
            for p in o.parts:
                m = s.part_mask(o.index, p.name)
                assert m.any(), (seed, o.category, p.name)
                assert (s.image[m] == np.array(p.rgb)).all(), (seed, o.category, p.name)
                covered += m
            assert (s.object_mask(o.index) == np.logical_or.reduce([s.labels == p.label for p in o.parts])).all()
        # parts tile the foreground exactly once; everything else is background
        assert covered.max() <= 1
        assert ((covered == 1) == (s.labels > 0)).all()


def test_masks_after_occlusion_are_what_is_visible():
    # two objects in the same spot: the later one hides part of the earlier one
    hidden = 0
    for seed in range(30):
        s = render_scene(seed, n_objects=3)
        for o in s.objects:
            x, y, w, h = o.frame
            vis = s.object_mask(o.index)
            assert not vis[:y].any() and not vis[y + h :].any() and not vis[:, :x].any() and not vis[:, x + w :].any()
            hidden += int(vis[y : y + h, x : x + w].sum() < w * h)
        labels_of_last = {p.label for p in s.objects[-1].parts}
        # the top object is never occluded: all its drawn pixels carry its labels
        assert set(np.unique(s.labels[s.object_mask(len(s.objects) - 1)])) <= labels_of_last
    assert hidden > 0


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b = render_scene(7), render_scene(7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.texts() == b.texts() and a.ground_truth() == b.ground_truth()
    images = [render_scene(s).image.tobytes() for s in range(20)]
    assert len(set(images)) == 20


def test_variety_of_scenes():
    scenes = [render_scene(s) for s in range(150)]
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    assert {len(s.objects) for s in scenes} == {1, 2, 3, 4}
    assert {o.category for s in scenes for o in s.objects} == {c.name for c in CATEGORIES}
    assert len({o.colour for s in scenes for o in s.objects}) >= 8
    sizes = [o.frame[2] * o.frame[3] for s in scenes for o in s.objects]
    assert max(sizes) > 3 * min(sizes)


def test_options_and_errors():
    s = render_scene(3, categories=["car", "bus"], background="stripes")
    assert [o.category for o in s.objects] == ["car", "bus"] and s.background == "stripes"
    assert len(render_scene(3, n_objects=1).objects) == 1
    with pytest.raises(InputError):
        render_scene(0, size=256)
    with pytest.raises(InputError):
        render_scene(0, categories=["dragon"])
    with pytest.raises(InputError):
        render_scene(0, background="plaid")
    with pytest.raises(InputError):
        s.part_mask(0, "sail")


def test_texts_and_ground_truth():
    s = render_scene(11, categories=["house", "car", "bus"], size=128)
    tm = s.text_masks()
    assert tm["a house"].sum() == s.object_mask(0).sum()
    house = s.objects[0]
    assert tm[category_caption("house", house.colour)].sum() == s.object_mask(0).sum()
    assert (tm["a triangular roof"] == s.part_mask(0, "roof")).all()
    roof = next(p for p in house.parts if p.name == "roof")
    assert (tm[f"{article(roof.colour)} {roof.colour} roof"] == s.part_mask(0, "roof")).all()
    # shared descriptor: the wheels of the car and of the bus
    assert (tm["two round black wheels"] == (s.part_mask(1, "wheels") | s.part_mask(2, "wheels"))).all()
    assert s.text_references()["two round black wheels"] == ["object1/wheels", "object2/wheels"]
    gt = json.loads(json.dumps(s.ground_truth()))
    for o in gt["objects"]:
        assert o["box"] == mask_box(s.masks()[o["mask"]])
        x, y, w, h = o["box"]
        m = s.masks()[o["mask"]]
        assert m[y : y + h, x : x + w].sum() == m.sum() and m[y, x : x + w].any() and m[y + h - 1, x : x + w].any()
    assert set(gt["texts"]) == set(s.texts()) <= set(all_texts())


def test_scene_save(tmp_path):
    s = render_scene(5)
    d = s.save(tmp_path / "scene")
    masks = np.load(d / "masks.npz")
    assert (masks["object0"] == s.object_mask(0)).all()
    assert json.loads((d / "ground_truth.json").read_text())["seed"] == 5
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(d / "image.png")), s.image)


def test_concept_set(tmp_path):
    cs = concept_set()
    assert len(cs) >= 8 and all(len(v) >= 2 for v in cs.values())
    assert "two round black wheels" in cs["car"] and "two round black wheels" in cs["bus"]
    assert "a grey pole" in cs["lamp"] and "a grey pole" in cs["traffic light"]
    assert json.loads(write_concept_set(tmp_path / "c.json").read_text()) == cs
    assert {d for ds in cs.values() for d in ds} <= set(all_texts())
    assert len(set(COLOURS.values())) == len(COLOURS)


# --- the shipped model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_clip():
    import vlexplain as vx

    torch.set_num_threads(1)
    return vx.load_model("testbed:shapes")


def test_shipped_model_files():
    from vlexplain.testbeds.testbed_models import assets_dir

    d = assets_dir()
    for f in ("config.json", "model.safetensors", "vocab.json", "train_log.csv", "metrics.json"):
        assert (d / f).exists(), f
    assert (d / "model.safetensors").stat().st_size <= 5 * 2**20


def test_shipped_model_reaches_category_bar(shapes_clip):
    from vlexplain.testbeds.shapes_eval import evaluate_shapes
    from vlexplain.testbeds.testbed_models import assets_dir

    recorded = json.loads((assets_dir() / "metrics.json").read_text())["metrics"]
    res = evaluate_shapes(shapes_clip, n_single=recorded["n_single"], n_multi=0)  # the recorded held-out set
    assert res["category_accuracy"] >= 0.98, res
    assert res["category_accuracy"] == pytest.approx(recorded["category_accuracy"], abs=1e-9)
    assert res["descriptor_top1"] == pytest.approx(recorded["descriptor_top1"], abs=1e-9)


def test_different_texts_give_different_embeddings(shapes_clip):
    # a text tower pooling at the wrong position gives (nearly) the same embedding for every text
    # (texts true of the same scenes may coincide: "a triangular roof" is only ever on a house)
    texts = ["a house", "a car", "a red roof", "a triangular roof", "two round black wheels"]
    e = shapes_clip.encode_text(shapes_clip.tokenize(texts))
    off = (e @ e.T)[~torch.eye(len(texts), dtype=torch.bool)]
    assert off.min() < 0.5 and off.mean() < 0.8
    from vlexplain.testbeds.shapes_categories import concept_set

    concepts = concept_set()  # every part descriptor lies nearest to a category that has that part
    names = [c.name for c in CATEGORIES]
    descs = sorted({d for ds in concepts.values() for d in ds})
    sims = (
        shapes_clip.encode_text(shapes_clip.tokenize(descs))
        @ shapes_clip.encode_text(shapes_clip.tokenize([f"a {c}" for c in names])).T
    )
    wrong = [d for d, j in zip(descs, sims.argmax(1).tolist()) if d not in concepts[names[j]]]
    assert not wrong, wrong
    cats = shapes_clip.encode_text(shapes_clip.tokenize([f"a {c.name}" for c in CATEGORIES]))
    assert (cats @ cats.T)[~torch.eye(len(CATEGORIES), dtype=torch.bool)].max() < 0.9
    tb = shapes_clip.tokenize(["a red house"])
    assert tb.shown_tokens(0) == ["a", "red", "house"]
    cfg = shapes_clip.model.config.text_config
    assert (cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id) == (3, 2, 0)
    assert int(tb.ids[0, tb.pool_index[0]]) == cfg.eos_token_id


def test_adapter_matches_training_path(shapes_clip):
    from vlexplain.testbeds.shapes_train import _embed, scene_pixels

    scenes = [render_scene(s) for s in range(4)]
    x = scene_pixels(scenes)
    assert torch.allclose(torch.stack([shapes_clip.preprocess(s.pil()) for s in scenes]), x, atol=1e-5)
    tb = shapes_clip.tokenize(["a house", "two round black wheels"])
    m = shapes_clip.model
    with torch.no_grad():
        assert torch.allclose(shapes_clip.encode_image(x), _embed(m, pixels=x), atol=1e-4)
        assert torch.allclose(shapes_clip.encode_text(tb), _embed(m, ids=tb.ids, am=tb.attention_mask), atol=1e-4)


def test_twenty_second_training_lowers_loss(tmp_path):
    from vlexplain.testbeds.shapes_train import ShapesCLIPConfig, train_shapes
    from vlexplain.testbeds.testbed_models import load_shapes_clip

    cfg = ShapesCLIPConfig(
        vision_width=32,
        vision_layers=2,
        text_width=32,
        text_layers=2,
        projection_dim=16,
        batch_size=32,
        warmup_steps=2,
        lr=3e-3,
        eval_every=0,
        threads=1,
    )
    info = train_shapes(minutes=20 / 60, out_dir=tmp_path / "m", seed=1, config=cfg, progress=False)
    rows = (tmp_path / "m" / "train_log.csv").read_text().splitlines()
    losses = [float(r.split(",")[3]) for r in rows[1:]]
    assert len(losses) == info["steps"] >= 6
    k = max(2, len(losses) // 5)
    assert np.mean(losses[-k:]) < np.mean(losses[:k]) - 0.05
    model = load_shapes_clip(tmp_path / "m")
    e = model.encode_text(model.tokenize(["a house", "a boat"]))
    assert e.shape == (2, 16)


def test_losses_against_hand_computed_values():
    from vlexplain.testbeds.shapes_losses import multi_positive_loss, ranking_loss

    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    pos = torch.tensor([[True, False, True], [False, True, False]])
    lsm = logits.log_softmax(-1)
    want = -(0.5 * (lsm[0, 0] + lsm[0, 2]) + lsm[1, 1]) / 2
    assert torch.allclose(multi_positive_loss(logits, pos), want)
    # ranking: each present class against the absent ones only
    r0a = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 1.0))
    r0c = -torch.log(torch.exp(torch.tensor(1.0)) / (torch.exp(torch.tensor(1.0)) + 1.0))
    r1b = -torch.log(
        torch.exp(torch.tensor(3.0)) / (torch.exp(torch.tensor(3.0)) + 1.0 + torch.exp(torch.tensor(-1.0)))
    )
    assert torch.allclose(ranking_loss(logits, pos), (r0a + r0c + r1b) / 3)

    # sigmoid: every (scene, text) pair is its own binary problem; summed over texts, mean over scenes
    from vlexplain.testbeds.shapes_losses import sigmoid_loss

    sp = torch.nn.functional.softplus
    per_pair = torch.where(pos, sp(-logits), sp(logits))
    assert torch.allclose(sigmoid_loss(logits, pos), per_pair.sum() / 2)


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_two_process_training_equals_one_process_on_the_union_batch(tmp_path, optimizer):
    """Two data-parallel processes of batch b take the same steps as one process of batch 2b."""
    import vlexplain.testbeds.shapes_train as st

    cfg = st.ShapesCLIPConfig(
        vision_width=32,
        vision_layers=1,
        text_width=32,
        text_layers=1,
        projection_dim=16,
        optimizer=optimizer,
        muon_lr=1e-2,
        batch_size=8,
        warmup_steps=1,
        lr=3e-3,
        eval_every=0,
        threads=1,
        pool_size=16,
        refresh_per_step=0,
        rank_weight=0.0,  # the ranking loss is a mean over pairs per process
        token_drop=0.0,
    )
    two = st.train_shapes(
        minutes=5, out_dir=tmp_path / "two", seed=3, config=cfg, progress=False, processes=2, max_steps=3
    )
    assert two["steps"] == 3 and two["processes"] == 2
    # the output directory is a model spec as it is (the shapes world's word tokenizer comes with it)
    as_path = vx.load_model(str(tmp_path / "two"))
    assert as_path.name == f"testbed:shapes@{tmp_path / 'two'}" and as_path.tokenize(["a circle"]).ids.shape[0] == 1
    cfg_one = st.ShapesCLIPConfig(**{**cfg.__dict__, "batch_size": 16})
    pools = [st._Pool(cfg, 3, {t: i for i, t in enumerate(st.all_texts())}, rank) for rank in range(2)]

    class Union:  # one process that draws exactly what the two processes drew, rank by rank
        object_texts = [None] * 32

        def batch(self, b):
            parts = [p.batch(8) for p in pools]
            return torch.cat([q[0] for q in parts]), torch.cat([q[1] for q in parts]), parts[0][2] + parts[1][2]

        def refresh(self, k):
            for p in pools:
                p.refresh(k)

    one = _one_process_reference(st, cfg_one, Union(), steps=3, seed=3)
    from safetensors.torch import load_file

    got = load_file(str(tmp_path / "two" / "model.safetensors"))
    # keys' biases get no true gradient (softmax ignores a constant added to every key): Adam turns
    # their rounding noise into arbitrary steps, so they are left out of the comparison
    compared = [n for n in one.state_dict() if n in got and not n.endswith("k_proj.bias")]
    assert len(compared) > 20
    bad = [n for n in compared if not torch.allclose(got[n], one.state_dict()[n], atol=1e-5)]
    assert not bad, bad
    assert json.loads((tmp_path / "two" / "train_config.json").read_text())["processes"] == 2


def _one_process_reference(st, cfg, pool, steps, seed):
    """The plain single-process loop of the sigmoid loss on ``pool``'s batches."""
    import math

    texts = st.all_texts()
    vocab = st.build_vocab(st.vocabulary())
    tb = st.word_tokenizer(vocab)(texts)
    model = st.build_model(cfg, len(vocab), seed).train()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
    bias = torch.nn.Parameter(torch.tensor(-10.0))
    opt = st._optimizer(model, bias, cfg)  # the recipe's optimisers (Muon + AdamW by default)
    cat_cols = torch.tensor([texts.index(st.category_caption(c.name)) for c in st.CATEGORIES])
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = g["peak_lr"] * st._lr_factor(step, step / steps, cfg.warmup_steps)
        st._step(model, opt, pool, tb, 16, cat_cols, cfg.rank_weight, None, bias)
        pool.refresh(cfg.refresh_per_step)
    return model


def test_unknown_testbed_model():
    import vlexplain as vx

    with pytest.raises(vx.ModelLoadError):
        vx.load_model("testbed:circles")


def test_cli_concepts(tmp_path):
    from vlexplain.cli import main

    assert main(["testbed", "concepts", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text()) == concept_set()


# --- grids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [2, 3])
def test_grid_layout(rows):
    g = make_grid(seed=4, rows=rows)
    side = rows * (224 // rows)
    assert g.image.size == (side, side) and g.cell_size == 224 // rows
    assert len(g.cells) == rows * rows == len(set(g.cells))
    assert g.text == photo_text(g.cells[g.query]) == g.texts[g.query]
    m = g.mask
    assert m.sum() == g.cell_size**2
    x, y, w, h = g.cell_box(g.query)
    assert m[y : y + h, x : x + w].all()
    r, c = divmod(g.query, rows)
    assert (x, y) == (c * g.cell_size, r * g.cell_size)
    total = sum(g.cell_mask(i).astype(int) for i in range(rows * rows))
    assert (total == 1).all()
    a = np.asarray(g.image)
    for i in range(rows * rows):  # every cell holds a photo, not an empty canvas
        x, y, w, h = g.cell_box(i)
        assert a[y : y + h, x : x + w].std() > 5


def test_grid_determinism_and_options():
    a, b = make_grid(1, rows=2), make_grid(1, rows=2)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.cells == b.cells and a.query == b.query
    assert any(not np.array_equal(np.asarray(a.image), np.asarray(make_grid(s).image)) for s in range(2, 5))
    g = make_grid(0, rows=2, photos=["chelsea", "coffee", "rocket", "astronaut"], query=1, cell_size=64)
    assert sorted(g.cells) == ["astronaut", "chelsea", "coffee", "rocket"] and g.query == 1
    assert g.image.size == (128, 128)
    assert {photo_text(n) for n in ("chelsea", "coffee", "rocket")} == {"a cat", "a cup of coffee", "a rocket"}
    with pytest.raises(InputError):
        make_grid(0, rows=3, photos=["chelsea", "coffee"])
    with pytest.raises(InputError):
        make_grid(0, rows=2, query=4)
    with pytest.raises(InputError):
        photo_text("dog")
    assert len(PHOTOS) >= 9
