"""DEAL's training loop on a tiny CUB folder: checkpoints and resume, frozen towers, the last blocks
only, a NaN loss, bad classes; batches, templates and the dataset-level evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from tests.support.cub import CUB_CONCEPTS, make_cub
from tests.support.models import fresh_model
from vlexplain.concepts.relevance import Templates, minmax
from vlexplain.concepts.sets import load_concepts
from vlexplain.concepts.train import batch_indices, deal_train, find_checkpoint, load_checkpoint
from vlexplain.data.classes import cub
from vlexplain.errors import InputError

# --- training loop -------------------------------------------------------------------------------


@pytest.fixture
def tiny_cub(tmp_path, hf_clip):
    make_cub(tmp_path / "cub")
    return cub(tmp_path / "cub", "all", transform=hf_clip.preprocess)


def test_train_checkpoint_and_resume(tmp_path, tiny_cub):
    cs = load_concepts(CUB_CONCEPTS)
    kw = dict(batch_size=2, lr=1e-4, save_every=1, progress=False, freeze_text=True)
    a = fresh_model()
    r = deal_train(a, tiny_cub, cs, tmp_path / "full", steps=2, **kw)
    assert r.stopped == "done" and r.step == 2
    rows = (tmp_path / "full" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,total,prediction,disentangle,localize") and len(rows) == 3
    # interrupted run: 1 step, then resume to 2 -> same weights as the uninterrupted run
    b = fresh_model()
    deal_train(b, tiny_cub, cs, tmp_path / "resumed", steps=1, **kw)
    assert find_checkpoint(tmp_path / "resumed") is not None
    c = fresh_model()
    r2 = deal_train(c, tiny_cub, cs, tmp_path / "resumed", steps=2, **kw)
    assert r2.step == 2
    for k, v in a.state_dict().items():
        torch.testing.assert_close(c.state_dict()[k], v, atol=1e-6, rtol=1e-5)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "resumed" / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2]
    fresh = fresh_model()
    assert load_checkpoint(find_checkpoint(tmp_path / "full"), fresh) == 2
    torch.testing.assert_close(fresh.state_dict(), a.state_dict())


@pytest.mark.parametrize("frozen", ["image", "text"])
def test_freeze_one_tower(tmp_path, tiny_cub, frozen):
    cs = load_concepts(CUB_CONCEPTS)
    m = fresh_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    tower = {"image": m.image, "text": m.text}
    names = {t: {id(p) for p in tower[t].parameters()} for t in tower}
    deal_train(
        m, tiny_cub, cs, tmp_path / "run", steps=2, batch_size=2, lr=1e-3, progress=False, **{f"freeze_{frozen}": True}
    )
    other = "text" if frozen == "image" else "image"
    moved = {t: False for t in tower}
    for name, p in m.named_parameters():
        for t in tower:
            if id(p) in names[t] and not torch.equal(p.detach(), before[name]):
                moved[t] = True
    assert not moved[frozen] and moved[other]


def test_image_blocks_trains_only_the_last_blocks(tmp_path, tiny_cub):
    cs = load_concepts(CUB_CONCEPTS)
    m = fresh_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    blocks = m.image.block_modules()
    last = {id(p) for p in blocks[-1].parameters()}
    image = {id(p) for p in m.image.parameters()}
    text = {id(p) for p in m.text.parameters()}
    deal_train(m, tiny_cub, cs, tmp_path / "run", steps=2, batch_size=2, lr=1e-3, progress=False, image_blocks=1)
    changed = {id(p) for n, p in m.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed & last and changed & text  # the last image block and the text tower train
    assert not (changed & image) - last  # stem, earlier blocks and head of the image tower do not
    assert all(p.requires_grad for p in m.image.parameters())  # flags restored after the run
    for bad in (0, len(blocks) + 1):
        with pytest.raises(InputError, match=r"image[-_]blocks must be"):  # (0: the range check, n + 1: the model)
            deal_train(
                fresh_model(),
                tiny_cub,
                cs,
                tmp_path / f"bad{bad}",
                steps=1,
                batch_size=2,
                progress=False,
                image_blocks=bad,
            )


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, tiny_cub, monkeypatch):
    cs = load_concepts(CUB_CONCEPTS)
    import vlexplain.concepts.train as train_mod

    real = train_mod.deal_losses
    calls = {"n": 0}

    def poisoned(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(train_mod, "deal_losses", poisoned)
    m = fresh_model()
    r = deal_train(
        m,
        tiny_cub,
        cs,
        tmp_path / "run",
        steps=4,
        batch_size=2,
        lr=1e-4,
        save_every=2,
        progress=False,
        freeze_text=True,
    )
    assert r.stopped.startswith("step 3") and "nan" in r.stopped
    assert r.step == 2
    ck = find_checkpoint(tmp_path / "run")
    fresh = fresh_model()
    assert load_checkpoint(ck, fresh) == 2
    assert all(torch.isfinite(v).all() for v in fresh.state_dict().values() if v.is_floating_point())
    assert json.loads((tmp_path / "run" / "stopped.json").read_text())["step"] == 2


def test_train_rejects_missing_classes(tmp_path, tiny_cub):
    with pytest.raises(InputError, match="Cardinal"):
        deal_train(
            fresh_model(), tiny_cub, load_concepts({"Black footed Albatross": ["x"]}), tmp_path, steps=1, progress=False
        )
    with pytest.raises(InputError, match="unknown DEAL option"):
        deal_train(fresh_model(), tiny_cub, load_concepts(CUB_CONCEPTS), tmp_path, steps=1, bogus=1)


def test_batch_indices_stream():
    a = [batch_indices(5, 3, s, seed=1) for s in range(4)]
    flat = [i for b in a for i in b]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert batch_indices(5, 3, 2, seed=1) == a[2]
    r0, r1 = batch_indices(8, 2, 1, 0, rank=0, world=2), batch_indices(8, 2, 1, 0, rank=1, world=2)
    assert not set(r0) & set(r1)


def test_templates():
    t = Templates("a {class}", "{class} with {descriptor}")
    assert t.category_prompt("cat") == "a cat" and t.concept_prompt("cat", "ears") == "cat with ears"
    torch.testing.assert_close(minmax(torch.tensor([[[2.0, 4.0]]])), torch.tensor([[[0.0, 1.0]]]), atol=1e-6, rtol=0)


def test_evaluate_concepts(tiny_cub, hf_clip):
    from vlexplain.concepts.evaluate import descriptor_parts, evaluate_concepts, format_report

    assert descriptor_parts("Yellow bill with black tip") == ["beak"]
    assert set(descriptor_parts("white eye-ring")) == {"left eye", "right eye"}
    assert descriptor_parts("bright plumage") == []
    cs = load_concepts({"Black footed Albatross": ["yellow bill", "long wings"], "Cardinal": ["red crest", "red bill"]})
    r = evaluate_concepts(hf_clip, tiny_cub, cs, batch_size=3)
    assert r["images"] == 4
    assert set(r["accuracy_standard"]) == {"top1", "top5"} and r["accuracy_standard"]["top5"] == 100.0
    assert 0 <= r["localizability"] <= 1 and 0 < r["disentanglability"] < 1
    assert r["part_maps"] == 4  # one bill descriptor per image, beak visible in every image
    assert 0 <= r["part_pointing"] <= 100 and 0 <= r["part_energy"] <= 1
    assert "localizability" in format_report(r)


def test_the_explosion_guard_by_hand():
    from vlexplain.concepts.train import DealConfig, _bad_loss

    cfg = DealConfig()  # factor 20, warm-up 10 steps, floor 0.05
    assert _bad_loss(25.0, 1.0, 20, cfg) is not None  # 25 > 20 x 1
    assert _bad_loss(15.0, 1.0, 20, cfg) is None
    assert _bad_loss(25.0, 1.0, 5, cfg) is None  # still warming up
    assert _bad_loss(float("nan"), 1.0, 0, cfg) is not None
    # a converged loss: a noisy batch of 0.14 against a running mean of 0.003 is not an explosion
    # (the control run of the spurious repair benchmark was stopped by it), 1.5 is
    assert _bad_loss(0.14, 0.003, 144, cfg) is None
    assert _bad_loss(1.5, 0.003, 144, cfg) is not None
