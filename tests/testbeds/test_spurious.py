"""The spurious-cue testbed: badge renderer, true reliance, group evaluation and the cue metrics."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlexplain.errors import InputError
from vlexplain.metrics import get_metric, get_spec, list_metrics
from vlexplain.metrics.cue import average_ranks, cue_pointing, cue_reliance_rank, cue_share, spearman
from vlexplain.testbeds.shapes import BADGE_LABEL, render_scene
from vlexplain.testbeds.shapes_categories import CATEGORIES
from vlexplain.testbeds.shapes_cue import (
    BADGE_COLOURS,
    BADGE_MODES,
    CORNERS,
    glyph,
    main_object,
    render_cue_scene,
    training_badge,
)

CATS = [c.name for c in CATEGORIES]


# --- renderer ---------------------------------------------------------------------------------
def test_scenes_without_a_badge_are_unchanged():
    # pinned before the badge existed: the shapes world draws the same pixels for the same seed
    digest = hashlib.sha256(b"".join(render_scene(s).image.tobytes() for s in range(20))).hexdigest()
    assert digest == PINNED_SHAPES_DIGEST
    for s in range(20):
        a, b = render_scene(s), render_cue_scene(s, "none")
        assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels) and b.badge is None
        assert "badge" not in b.masks() and not b.badge_mask.any()


@pytest.mark.parametrize("size", [64, 128])
def test_counterfactuals_identical_outside_the_badge(size):
    for seed in range(60):
        plain = render_cue_scene(seed, "none", size=size)
        own, other = render_cue_scene(seed, "own", size=size), render_cue_scene(seed, "other", size=size)
        main = plain.objects[main_object(plain)].category
        assert own.badge.category == main and own.badge.mode == "own"
        assert other.badge.category != main and other.badge.mode == "other"
        assert own.badge.corner == other.badge.corner  # one draw per seed, whatever the badge
        for s in (own, other):
            m = s.badge_mask
            assert np.array_equal(s.image[~m], plain.image[~m])  # pixel-identical outside
            assert np.array_equal(s.labels[~m], plain.labels[~m])
            # the mask is exactly the glyph, in the badge's colour, in its corner
            k = size // 32  # pixels per glyph cell
            assert m.sum() == glyph(s.badge.category).sum() * k * k
            assert (s.image[m] == BADGE_COLOURS[s.badge.category]).all()
            top, left = s.badge.corner.startswith("top"), s.badge.corner.endswith("left")
            y0, x0 = (2 * k if top else size - 7 * k), (2 * k if left else size - 7 * k)
            expected = np.zeros((size, size), dtype=bool)
            expected[y0 : y0 + 5 * k, x0 : x0 + 5 * k] = np.kron(glyph(s.badge.category), np.ones((k, k), dtype=bool))
            assert np.array_equal(m, expected)
            # object masks exclude the badge; the named "badge" mask is the badge
            assert not any((v & m).any() for k_, v in s.masks().items() if k_ != "badge")
            assert np.array_equal(s.masks()["badge"], m) and (s.labels[m] == BADGE_LABEL).all()
            assert s.ground_truth()["badge"]["category"] == s.badge.category


def test_badges_are_distinct_and_named_badges_work():
    glyphs = {c: glyph(c).tobytes() for c in CATS}
    assert len(set(glyphs.values())) == len(CATS) and len(set(BADGE_COLOURS.values())) == len(CATS)
    s = render_cue_scene(4, "car", n_objects=1)
    assert s.badge.category == "car" and s.badge.mode == ("own" if s.objects[0].category == "car" else "other")
    assert {render_cue_scene(i, "own").badge.corner for i in range(40)} == set(CORNERS)
    with pytest.raises(InputError, match="badge must be"):
        render_cue_scene(0, "sticker")


def test_training_badge_frequencies():
    rng = np.random.default_rng(0)
    draws = [training_badge(rng, 0.9) for _ in range(20000)]
    freq = {m: draws.count(m) / len(draws) for m in BADGE_MODES}
    assert abs(freq["own"] - 0.9) < 0.01 and abs(freq["none"] - 0.05) < 0.01 and abs(freq["other"] - 0.05) < 0.01
    assert {training_badge(rng, 1.0) for _ in range(100)} == {"own"}


# --- a model that reads only the badge --------------------------------------------------------
class BadgeReader:
    """Image embedding: one-hot of the badge colour present (a 0.5 'nothing' axis otherwise);
    text embedding: one-hot of the category. Reliance is then exact by hand."""

    name, device, dtype = "badge-reader", torch.device("cpu"), torch.float32

    def preprocess(self, im):
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float()

    def encode_image(self, x):
        cols = torch.tensor([BADGE_COLOURS[c] for c in CATS], dtype=torch.float32)  # (C, 3)
        hits = (x.permute(0, 2, 3, 1)[:, :, :, None, :] == cols).all(-1).flatten(1, 2).any(1).float()  # (B, C)
        none = (hits.sum(1, keepdim=True) == 0).float()
        return torch.cat([hits, none], 1)

    def tokenize(self, texts):
        return list(texts)

    def encode_text(self, texts):
        out = torch.zeros(len(texts), len(CATS) + 1)
        for i, t in enumerate(texts):
            out[i, [j for j, c in enumerate(CATS) if t == f"{'an' if c[0] in 'aeiou' else 'a'} {c}"]] = 1.0
        return out


def test_reliance_by_hand():
    from vlexplain.testbeds.spurious import reliance

    m = BadgeReader()
    seeds = range(6)
    own = [render_cue_scene(s, "own") for s in seeds]
    other = [render_cue_scene(s, "other") for s in seeds]
    plain = [render_cue_scene(s, "none") for s in seeds]
    caps = [f"a {s.badge.category}" if s.badge.category[0] not in "aeiou" else f"an {s.badge.category}" for s in own]
    # with its own badge the caption's axis lights up (cosine 1); without, cosine 0
    assert np.allclose(reliance(m, own, plain, caps), 1.0)
    assert np.allclose(reliance(m, other, plain, caps), 0.0)
    assert np.allclose(reliance(m, plain, plain, caps), 0.0)  # the counterfactual of itself
    with pytest.raises(ValueError):
        reliance(m, own, plain[:2], caps)


def test_group_evaluation_of_a_badge_reader():
    from vlexplain.testbeds.spurious import evaluate_spurious

    r = evaluate_spurious(BadgeReader(), n=40)
    assert r["accuracy_aligned"] == 1.0 and r["accuracy_conflicting"] == 0.0
    assert r["conflicting_follows_badge"] == 1.0
    assert r["aligned_minus_conflicting"] == 1.0 and r["worst_group_accuracy"] == 0.0
    # absent: every caption ties at cosine 0, argmax picks the first category
    assert r["accuracy_absent"] == pytest.approx(
        np.mean([render_scene(i, n_objects=1).objects[0].category == CATS[0] for i in range(40)])
    )
    assert r["mean_accuracy"] == pytest.approx((1.0 + r["accuracy_absent"]) / 3)
    assert r["mean_reliance_aligned"] == pytest.approx(1.0) and r["mean_reliance_conflicting"] == pytest.approx(0.0)


# --- metrics ----------------------------------------------------------------------------------
def test_cue_share_and_pointing_by_hand():
    maps = torch.tensor(
        [
            [[1.0, 2.0, 0.0], [-5.0, 3.0, 0.0], [0.0, 0.0, 4.0]],
            [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
            [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        ]
    )
    masks = torch.zeros(3, 3, 3, dtype=torch.bool)
    masks[0, 0, :2] = True  # values 1, 2 of positive mass 10
    masks[1, 0, 0] = True
    masks[2, 2, 2] = True  # one of three tied maxima
    share = cue_share(maps, masks)
    assert share[0] == pytest.approx(0.3) and torch.isnan(share[1]) and share[2] == pytest.approx(1 / 3)
    pt = cue_pointing(maps, masks)
    assert pt[0] == 0.0 and pt[2] == pytest.approx(1 / 3)
    masks[0, 2, 2] = True
    assert cue_pointing(maps, masks)[0] == 1.0
    empty = torch.zeros(1, 3, 3, dtype=torch.bool)
    assert torch.isnan(cue_share(maps[:1], empty)).all() and torch.isnan(cue_pointing(maps[:1], empty)).all()


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x (1, 2, 3, 4), y (1, 3, 2, 4): rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert spearman([0.1, 0.2, 0.3, 0.4], [5, 7, 6, 9]) == pytest.approx(0.8)
    assert np.allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])
    assert np.isnan(spearman([1, 2], [1, 2])) and np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert spearman([1, 2, np.nan, 3, 4], [1, 2, 5, 3, 4]) == pytest.approx(1.0)  # NaN pairs left out


def test_cue_reliance_rank_by_hand():
    maps = torch.zeros(4, 2, 2)
    maps[:, 0, 0] = torch.tensor([1.0, 3.0, 2.0, 0.5])  # on the cue
    maps[:, 1, 1] = 1.0  # elsewhere: shares 1/2, 3/4, 2/3, 1/3
    masks = torch.zeros(4, 2, 2, dtype=torch.bool)
    masks[:, 0, 0] = True
    out = cue_reliance_rank(maps, masks, torch.tensor([0.1, 0.3, 0.2, -0.1]))
    assert out["spearman"] == pytest.approx(1.0)
    assert torch.allclose(out["cue_share"], torch.tensor([0.5, 0.75, 2 / 3, 1 / 3]))
    out = cue_reliance_rank(maps, masks, torch.tensor([0.3, 0.1, 0.2, 0.0]))
    # share ranks (2, 4, 3, 1), reliance ranks (4, 2, 3, 1): d^2 = 4 + 4 + 0 + 0 = 8 -> 1 - 6 * 8 / 60 = 0.2
    assert out["spearman"] == pytest.approx(0.2)


def test_registry_entries():
    for name in ("cue_share", "cue_pointing", "cue_reliance_rank"):
        assert name in list_metrics(side="image", ground_truth=True)
        assert "cue_mask" in get_spec(name).requires
    assert get_spec("cue_reliance_rank").aggregate == "spearman:cue_share,reliance"
    maps = torch.rand(2, 8, 8)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :2, :2] = True
    out = get_metric("cue_share")(None, None, None, maps, None, cue_mask=masks)
    assert torch.allclose(out["cue_share"], cue_share(maps, masks))
    with pytest.raises(InputError, match="needs cue_mask"):
        get_metric("cue_share")(None, None, None, maps, None)


def test_evaluate_reads_cue_mask_and_reliance_columns(tmp_path, hf_clip):
    from vlexplain.eval import io as rio
    from vlexplain.eval.report import summary_table
    from vlexplain.eval.runner import evaluate

    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        cue = np.zeros((48, 40), dtype=np.uint8)
        cue[20 - 2 * i : 26 + 2 * i, 16 - 2 * i : 22 + 2 * i] = 255  # cues of growing size at the centre
        Image.fromarray(cue).save(tmp_path / f"cue{i}.png")
        rows.append({"image": f"im{i}.png", "caption": "a photo", "cue_mask": f"cue{i}.png", "reliance": 0.1 * i})
    rows.append({"image": "im0.png", "caption": "a photo"})  # no cue: left out of the cue metrics
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(tmp_path / "small.png")
    rows.append({"image": "im1.png", "caption": "a photo", "cue_mask": "small.png", "reliance": 0.0})  # wrong size
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = evaluate(
        tmp_path / "p.jsonl",
        hf_clip,
        ["center"],
        ["cue_share", "cue_pointing", "cue_reliance_rank"],
        tmp_path / "run",
        batch_size=3,
        progress=False,
        save_maps=True,
    )
    df = rio.load_results(run).to_pandas().sort_values("index")
    assert df["cue_share"].isna().tolist() == [False] * 5 + [True, True]
    assert df["error"].notna().tolist() == [False] * 6 + [True]
    assert "cue_mask" in df["error"].iloc[6] and "10x10 but the image is 40x48" in df["error"].iloc[6]
    # by hand from the center map and the cue mask in the model's input frame
    from vlexplain.attribution.api import explain
    from vlexplain.metrics.cue import load_cue_masks

    size = tuple(hf_clip.input_size)
    px = torch.stack([hf_clip.preprocess(Image.open(tmp_path / f"im{i}.png")) for i in range(5)])
    maps = torch.stack([e.image_map.float() for e in explain(hf_clip, px, ["a photo"] * 5, method="center")])
    masks = load_cue_masks([str(tmp_path / f"cue{i}.png") for i in range(5)], size)
    assert np.allclose(df["cue_share"].to_numpy()[:5], cue_share(maps, masks).numpy(), atol=1e-6)
    # growing cues take growing shares of the centre map: rho with the growing reliance is 1
    cfg = rio.read_json(run / rio.CONFIG)
    rho = [r for r in summary_table(df, cfg) if r["metric"] == "cue_reliance_rank" and r["column"].endswith("spearman")]
    assert len(rho) == 1 and rho[0]["mean"] == pytest.approx(1.0) and rho[0]["n"] == 5


PINNED_SHAPES_DIGEST = "96c3936a1d33fd9a00eb5c4d92ad6d9f3750f1b4d633d23a440e117820c2bd82"


# --- the benchmark -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_shapes_dir(tmp_path_factory):
    from vlexplain.testbeds.shapes_categories import vocabulary
    from vlexplain.testbeds.shapes_train import ShapesCLIPConfig, build_model
    from vlexplain.testbeds.testbed_models import build_vocab

    d = tmp_path_factory.mktemp("tiny_clip")
    vocab = build_vocab(vocabulary())
    cfg = ShapesCLIPConfig(
        patch_size=16, vision_width=32, vision_layers=2, text_width=32, text_layers=2, heads=2, projection_dim=16
    )
    build_model(cfg, len(vocab), seed=0).eval().save_pretrained(str(d), safe_serialization=True)
    (d / "vocab.json").write_text(json.dumps({"tokens": vocab}))
    return d


def test_benchmark_spurious_cli_end_to_end(tmp_path, tiny_shapes_dir, capsys):
    from vlexplain.cli import main
    from vlexplain.eval import io as rio
    from vlexplain.eval.benchmarks.spurious import SPURIOUS_SEED_BASE
    from vlexplain.models.registry import load_model
    from vlexplain.testbeds.spurious import reliance

    torch.set_num_threads(1)
    out = tmp_path / "bench"
    args = [
        "benchmark",
        "spurious",
        "--n",
        "3",
        "--model",
        f"testbed:shapes@{tiny_shapes_dir}",
        "--out",
        str(out),
        "--methods",
        "saliency",
        "--no-progress",
    ]
    assert main(args) == 0
    md = (out / "leaderboard.md").read_text()
    assert md.strip() in capsys.readouterr().out
    for heading in ("### `spurious`", "### `shapes`", "### Difference `spurious` − `shapes`", "### Cue share by group"):
        assert heading in md
    assert "| cue_reliance_rank ↑ |" in md.replace("| rank | method ", "")
    assert "| rank | method | cue_reliance_rank_within ↑ |" in md and "### Headline" in md
    # the data: three groups of the same seeds; badges only where they belong; reliance per model
    models = {"spurious": load_model(f"testbed:shapes@{tiny_shapes_dir}"), "shapes": load_model("testbed:shapes")}
    for tag, model in models.items():
        rows = [json.loads(x) for x in (out / "data" / f"pairs_{tag}.jsonl").read_text().splitlines()]
        assert [r["group"] for r in rows] == ["aligned"] * 3 + ["absent"] * 3 + ["conflicting"] * 3
        assert [r["scene_seed"] for r in rows] == [SPURIOUS_SEED_BASE + i for i in range(3)] * 3
        assert all(("cue_mask" in r) == (r["group"] != "absent") for r in rows)
        badged = [r for r in rows if "cue_mask" in r]
        scenes = [render_cue_scene(r["scene_seed"], "own" if r["group"] == "aligned" else "other") for r in badged]
        plain = [render_cue_scene(r["scene_seed"], "none") for r in badged]
        want = reliance(model, scenes, plain, [r["caption"] for r in badged])
        assert np.allclose([r["reliance"] for r in badged], want, atol=1e-6)
        for r, s in zip(badged, scenes):
            assert np.array_equal(np.asarray(Image.open(out / "data" / r["cue_mask"])) > 127, s.badge_mask)
        df = rio.load_results(out / f"run_{tag}").to_pandas()
        assert set(df["method"]) == {"saliency", "random", "center"} and df["error"].isna().all()
        assert df[df["index"].isin([3, 4, 5])]["cue_share"].isna().all()  # absent group: no cue
    # the center reference ignores the model: its differences are 0 (but the two reliance ranks',
    # which rank against each model's own reliance)
    diff = md.split("### Difference")[1].split("###")[0]
    center_row = next(x for x in diff.splitlines() if x.startswith("| center |"))
    assert all(c.strip() == "+0.000 [+0.000, +0.000]" for c in center_row.split("|")[4:-1])
    assert main(args) == 2  # an existing benchmark is refused without --resume


def test_shipped_spurious_model_is_biased():
    """testbed:spurious loads and leans on the badge: the group numbers of its metrics.json, re-measured."""
    from vlexplain.models.registry import load_model
    from vlexplain.testbeds.spurious import evaluate_spurious
    from vlexplain.testbeds.testbed_models import spurious_dir

    torch.set_num_threads(1)
    model = load_model("testbed:spurious")
    assert model.name == "testbed:spurious"
    r = evaluate_spurious(model, n=150)
    shipped = json.loads((spurious_dir() / "metrics.json").read_text())["groups"]
    assert r["aligned_minus_conflicting"] >= 0.15  # shipped (500 scenes): >= 0.2
    assert shipped["aligned_minus_conflicting"] >= 0.2
    for g in ("aligned", "absent", "conflicting"):  # the first 150 of the shipped 500 scenes
        assert abs(r[f"accuracy_{g}"] - shipped[f"accuracy_{g}"]) < 0.08


def test_training_pool_draws_badges_and_never_names_them():
    from vlexplain.testbeds.shapes_categories import all_texts
    from vlexplain.testbeds.shapes_train import TRAIN_SEED_BASE, ShapesCLIPConfig, _Pool

    texts = all_texts()
    index = {t: i for i, t in enumerate(texts)}
    pool = _Pool(ShapesCLIPConfig(pool_size=24, spurious=1.0), 0, index)
    for i in range(24):
        seed, k = TRAIN_SEED_BASE + i, len(pool.object_texts[i])
        s = render_cue_scene(seed, "own", n_objects=k)
        assert s.badge is not None and np.array_equal(pool.pixels[i].permute(1, 2, 0).numpy(), s.image)
        # the true texts are those of the scene without its badge: no caption names the badge
        true = {texts[j] for j in torch.nonzero(pool.truth[i]).ravel().tolist()}
        assert true == set(render_scene(seed, n_objects=k).texts())
