"""OpenCLIP families: embeddings equal the model's own, tokenizers used or refused, loading paths.

Every family of the families table with ``library == "open_clip"`` is built tiny (random weights,
offline). The method contract (every method, both sides, batch == one at a time) runs over the same
table in test_contract.py.
"""

from __future__ import annotations

import json

import pytest
import torch

import vlexplain as vx
from vlexplain.errors import ModelLoadError
from vlexplain.models.families import families

OC_FAMILIES = [f for f in families() if f.library == "open_clip"]
TEXTS = ["a photo of a small cat on the floor", "two dogs"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _raw(fam):
    """(open_clip model, DualEncoder) of a family's tiny build."""
    built = fam.tiny()
    if isinstance(built, vx.models.base.DualEncoder):
        return built.model, built
    return built, vx.load_model(built)


def _own_ids(dual, texts):
    """Ids as the model's own pipeline makes them (open_clip tokenizers pad to the context length)."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = dual._tok
    if hasattr(tok, "fn"):  # an open_clip-style callable
        return torch.as_tensor(tok.fn(list(texts)))
    if hasattr(tok, "encode") and dual.text.vocab_size == 49408 and type(dual.text).__name__ == "OpenCLIPTextTower":
        return SimpleTokenizer(context_length=dual.text.context_length)(texts)
    return None


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(key):
        if key not in cache:
            cache[key] = _raw(next(f for f in OC_FAMILIES if f.key == key))
        return cache[key]

    return get


@pytest.mark.parametrize("key", [f.key for f in OC_FAMILIES])
def test_embeddings_equal_the_models_own(key, built):
    model, dual = built(key)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *dual.input_size, generator=g)
    with torch.no_grad():
        assert _rel(dual.encode_image(x, normalize=False), model.encode_image(x, normalize=False)) < 1e-5
        batch = dual.tokenize(TEXTS)
        mine = dual.encode_text(batch, normalize=False)
        ids = _own_ids(dual, TEXTS)
        if ids is None:  # transformers tokenizer: the ids it gives with its special tokens, padded
            ids = batch.ids
        assert _rel(mine, model.encode_text(ids, normalize=False)) < 1e-5
        # a text alone == the same text inside a batch padded for a longer one
        alone = dual.encode_text(dual.tokenize(TEXTS[1:]), normalize=False)
        assert _rel(alone[0], mine[1]) < 1e-5
    assert batch.shown_tokens(1)[:2] == ["two", "dogs"]


@pytest.mark.parametrize("key", [f.key for f in OC_FAMILIES])
def test_family_layers_and_grid(key, built):
    _, dual = built(key)
    img = dual.image
    assert 0 <= img.default_layer() < img.num_blocks
    h = img.encode(torch.zeros(1, 3, *dual.input_size), stop=img.default_layer())
    if h.dim() == 3:  # ViT: the patch tokens fill the tower's own grid
        gh, gw = img.grid
        assert h.shape[1] - img.num_prefix_tokens == gh * gw


def test_resnet_blocks_are_bottlenecks_and_m2ib_sits_after_layer3(built):
    model, dual = built("open_clip-resnet")
    v = model.visual
    assert dual.image.block_modules() == [*v.layer1, *v.layer2, *v.layer3, *v.layer4]
    assert dual.image.default_layer() == len(v.layer1) + len(v.layer2) + len(v.layer3) - 1
    with pytest.raises(vx.errors.MethodError, match="attention"):
        vx.explain(dual, torch.zeros(3, *dual.input_size), "a cat", method="chefer", sides=["image"])


def test_non_square_timm_grid(built):
    _, dual = built("open_clip-timm-vit")
    assert dual.input_size == (32, 48) and dual.image.grid == (2, 3)
    assert dual.image.num_prefix_tokens == 2 and not dual.image.class_token_pooled  # registers, no CLS
    e = vx.explain(dual, torch.zeros(3, 32, 48), "a cat", method="chefer", sides=["image"])
    assert tuple(e.patch_map.shape) == (2, 3) and tuple(e.image_map.shape) == (32, 48)


def test_timm_attention_is_the_softmax_the_block_uses(built):
    """The hooked probabilities, applied by hand, give timm's own attention output."""
    from vlexplain.models.open_clip_timm import timm_attention_probs

    for key in ("open_clip-siglip", "open_clip-eva"):
        _, dual = built(key)
        tower = dual.image
        attn = tower.trunk.blocks[0].attn
        fused_before = attn.fused_attn
        x = torch.randn(2, 3, *dual.input_size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            h = tower.encode(x, stop=-1)
            out, probs = tower.block(0, h, x, need_attn=True)
            ref, _ = tower.block(0, h, x)  # fused path
        T = h.shape[1]
        assert probs.shape[-2:] == (T, T) and torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        assert attn.fused_attn == fused_before and len(attn.attn_drop._forward_hooks) == 0  # restored
        with pytest.raises(RuntimeError), timm_attention_probs(attn):
            raise RuntimeError("restored even when the block raises")
        assert attn.fused_attn == fused_before and len(attn.attn_drop._forward_hooks) == 0


@pytest.mark.parametrize(
    "pool,extra",
    [
        ("first", {}),
        ("last", {"no_causal_mask": True}),
        ("eos", {"eos_id": 49407}),
        ("argmax", {"no_causal_mask": True, "use_pad_mask": True}),
        ("argmax", {"no_causal_mask": True}),
    ],
)
def test_text_pool_types(pool, extra):
    from open_clip.tokenizer import SimpleTokenizer

    from vlexplain.models.open_clip import tiny_text_pool

    model = tiny_text_pool(pool, **extra)
    dual = vx.load_model(model)
    ids = SimpleTokenizer(context_length=16)(TEXTS)
    with torch.no_grad():
        b = dual.tokenize(TEXTS)
        assert _rel(dual.encode_text(b, normalize=False), model.encode_text(ids, normalize=False)) < 1e-5
        alone = dual.encode_text(dual.tokenize(TEXTS[1:]), normalize=False)
        assert _rel(alone[0], dual.encode_text(b, normalize=False)[1]) < 1e-5
    e = vx.explain(dual, torch.zeros(3, 32, 32), TEXTS[0], method="chefer", sides=["text"])
    assert e.tokens[:3] == ["a", "photo", "of"] and torch.isfinite(e.token_scores).all()


def test_pool_none_is_refused():
    from vlexplain.models.open_clip import tiny_text_pool

    with pytest.raises(ModelLoadError, match="pool"):
        vx.load_model(tiny_text_pool("none"))


def test_eos_pooling_without_eos_id_is_refused():
    from vlexplain.models.open_clip import tiny_text_pool

    model = tiny_text_pool("eos")
    model.text.eos_id = None
    with pytest.raises(ModelLoadError, match="eos_id"):
        vx.load_model(model)


@pytest.mark.parametrize("pooler", ["cls_pooler", "mean_pooler"])
def test_hf_text_encoder_bert(pooler):
    from vlexplain.models.open_clip import minilm_tokenizer, tiny_hf_text

    model = tiny_hf_text("bert", pooler)
    tok = minilm_tokenizer()
    dual = vx.load_model(model, tokenizer=tok)
    ids = tok(TEXTS, padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        b = dual.tokenize(TEXTS)
        assert torch.equal(b.ids, ids)
        assert _rel(dual.encode_text(b, normalize=False), model.encode_text(ids, normalize=False)) < 1e-5
    assert b.shown_tokens(1) == ["two", "dogs"]
    assert int(b.pool_index[0]) == (0 if pooler == "cls_pooler" else -1)
    for method in ("chefer", "m2ib", "gradcam"):
        e = vx.explain(
            dual,
            torch.zeros(3, 32, 32),
            TEXTS[0],
            method=method,
            sides=["text"],
            seed=0,
            **({"steps": 2, "num_samples": 2} if method == "m2ib" else {}),
        )
        assert len(e.tokens) == 9 and torch.isfinite(e.token_scores).all()


def test_hf_text_encoder_xlmr_with_a_callable_tokenizer():
    """XLM-R (mean pooling, padding id 1): a callable returning ids is used as given."""
    from vlexplain.models.open_clip import tiny_hf_text

    model = tiny_hf_text("xlm-roberta", "mean_pooler")

    def tokenizer(texts):  # <s> one id per word </s>, padded with 1
        rows = [[0] + [5 + sum(map(ord, w)) % 1000 for w in t.split()] + [2] for t in texts]
        n = max(map(len, rows))
        return torch.tensor([r + [1] * (n - len(r)) for r in rows])

    tokenizer.pad_token_id = 1
    dual = vx.load_model(model, tokenizer=tokenizer)
    ids = tokenizer(TEXTS)
    with torch.no_grad():
        b = dual.tokenize(TEXTS)
        assert torch.equal(b.ids, ids) and b.shown_tokens(1) == [f"#{i}" for i in ids[1, 1:3].tolist()]
        assert _rel(dual.encode_text(b, normalize=False), model.encode_text(ids, normalize=False)) < 1e-5


# --- tokenizers: used or refused, never replaced ------------------------------------------------
def _siglip_like(vocab: int):
    from vlexplain.models.open_clip import tiny_text_pool

    return tiny_text_pool("last", no_causal_mask=True, vocab_size=vocab)


def test_tokenizer_needed_when_the_vocabulary_is_not_clips():
    with pytest.raises(ModelLoadError, match="32000 tokens.*pass its tokenizer"):
        vx.load_model(_siglip_like(32000))


@pytest.mark.parametrize("vocab,why", [(32000, "49408 tokens but .* 32000 rows"), (256000, "would name other tokens")])
def test_clip_bpe_refused_for_another_vocabulary(vocab, why):
    from open_clip.tokenizer import SimpleTokenizer

    with pytest.raises(ModelLoadError, match=why):
        vx.load_model(_siglip_like(vocab), tokenizer=SimpleTokenizer(context_length=16))


def test_open_clip_hf_tokenizer_is_used(tmp_path):
    """open_clip's HFTokenizer (no .encode) is called as the model's pipeline calls it."""
    from open_clip.tokenizer import HFTokenizer

    from vlexplain.models.open_clip import minilm_tokenizer, tiny_hf_text

    minilm_tokenizer().save_pretrained(tmp_path)
    tok = HFTokenizer(str(tmp_path), context_length=64, clean="canonicalize")
    model = tiny_hf_text("bert", "cls_pooler")
    dual = vx.load_model(model, tokenizer=tok)
    ids = tok(["Two, DOGS!"])
    with torch.no_grad():
        b = dual.tokenize(["Two, DOGS!"])
        assert torch.equal(b.ids[0], ids[0, : b.ids.shape[1]]) and b.shown_tokens(0) == ["two", "dogs"]
        assert _rel(dual.encode_text(b, normalize=False), model.encode_text(ids, normalize=False)) < 1e-5


def test_a_non_tokenizer_is_refused():
    from vlexplain.models.open_clip import tiny_vit

    with pytest.raises(ModelLoadError, match="cannot use a int as a tokenizer"):
        vx.load_model(tiny_vit(), tokenizer=3)


# --- loading: local directories and checkpoints -------------------------------------------------
def _save_local_dir(model, cfg: dict, d):
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    return d


_TEXT = dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=1)
LOCAL_CFGS = {
    "resnet": dict(
        embed_dim=16, vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=8, head_width=8), text_cfg=_TEXT
    ),
    "coca": dict(
        embed_dim=16,
        vision_cfg=dict(
            image_size=32,
            patch_size=16,
            width=32,
            layers=1,
            head_width=8,
            attentional_pool=True,
            attn_pooler_heads=4,
            attn_pooler_queries=4,
            output_tokens=True,
        ),
        text_cfg=dict(_TEXT, embed_cls=True, output_tokens=True),
        multimodal_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=1),
        custom_text=True,
    ),
    "convnext": dict(
        embed_dim=16,
        vision_cfg=dict(timm_model_name="convnext_atto", timm_pool="", timm_proj="linear", image_size=64),
        text_cfg=_TEXT,
        custom_text=True,
    ),
    "eva": dict(
        embed_dim=16,
        vision_cfg=dict(timm_model_name="eva02_tiny_patch14_224", timm_pool="token", timm_proj=None, image_size=224),
        text_cfg=_TEXT,
        custom_text=True,
    ),
}


@pytest.mark.parametrize("kind", list(LOCAL_CFGS))
def test_loads_from_a_local_directory(kind, tmp_path, monkeypatch):
    """A directory with open_clip_config.json + weights loads offline with its weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = LOCAL_CFGS[kind]
    model = _build_from_cfg(cfg, kind)
    d = _save_local_dir(model, cfg, tmp_path / kind)
    dual = vx.load_model(str(d))
    x = torch.randn(1, 3, *dual.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert _rel(dual.encode_image(x, normalize=False), model.encode_image(x, normalize=False)) < 1e-5


def _build_from_cfg(cfg: dict, kind: str):
    """The model open_clip builds from ``cfg`` (its class is chosen by name: CoCa's directory says coca)."""
    import pathlib
    import tempfile

    from open_clip.factory import create_model

    with tempfile.TemporaryDirectory(suffix=f"-{kind}") as t:
        p = pathlib.Path(t)
        (p / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
        torch.manual_seed(0)
        return create_model(f"local-dir:{p}").eval()


def test_loads_arch_with_a_local_checkpoint(tmp_path, monkeypatch):
    """open_clip:ARCH/ckpt.pt: the architecture's config, the file's weights (weights-only)."""
    import open_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "vx-tiny-rn.json").write_text(json.dumps(LOCAL_CFGS["resnet"]))
    open_clip.add_model_config(tmp_path / "vx-tiny-rn.json")
    model = open_clip.create_model("vx-tiny-rn").eval()
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    dual = vx.load_model(f"open_clip:vx-tiny-rn/{tmp_path / 'ckpt.pt'}")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert _rel(dual.encode_image(x, normalize=False), model.encode_image(x, normalize=False)) < 1e-5
    # a checkpoint of another architecture: one line
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="does not hold the weights of an OpenCLIP vx-tiny-rn"):
        vx.load_model(f"open_clip:vx-tiny-rn/{tmp_path / 'other.pt'}")


# --- M2IB on the new tower kinds equals the literal reference -----------------------------------
@pytest.mark.parametrize(
    "key,modality",
    [
        ("open_clip-resnet", "image"),
        ("open_clip-siglip", "image"),
        ("open_clip-siglip", "text"),
        ("open_clip-eva", "image"),
    ],
)
def test_m2ib_equals_the_literal_reference(key, modality, built):
    from tests.support.m2ib_module_reference import reference_m2ib_module

    model, dual = built(key)
    tower = dual.tower(modality)
    layer = 1
    px = torch.randn(1, 3, *dual.input_size, generator=torch.Generator().manual_seed(1))
    text = "a small red house on a hill"
    tb = dual.tokenize([text])
    own = _own_ids(dual, [text])
    ids = tb.ids if own is None else own  # plain CLIP text towers need the full context
    enc_img = lambda x: model.encode_image(x, normalize=False)
    enc_txt = lambda t: model.encode_text(t, normalize=False)
    module = tower.block_modules()[layer]
    if modality == "image":
        ref = reference_m2ib_module(enc_img, enc_txt, module, px, ids, beta=0.1, steps=3, lr=1.0, S=3, seed=7)
    else:
        ref = reference_m2ib_module(
            enc_txt,
            enc_img,
            module,
            ids,
            px,
            beta=0.1,
            steps=3,
            lr=1.0,
            S=3,
            seed=7,
            n_real=int(tb.attention_mask.sum()),
        )
    for p in model.parameters():  # the reference, like the released code, leaves gradients behind
        p.grad = None
    exp = vx.explain(
        dual, px, text, method="m2ib", seed=7, sides=[modality], layer=layer, beta=0.1, steps=3, lr=1.0, num_samples=3
    )
    if modality == "image":
        got = exp.patch_map
        want = ref if ref.dim() == 2 else ref[tower.num_prefix_tokens :].reshape(got.shape)
    else:
        got, want = exp.token_scores, ref[tb.content_mask[0]]
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3 * float(want.abs().max()))


# --- open_clip: specs offline: tokenizer directories, bad checkpoints ---------------------------
def _register_tiny_siglip_arch(tmp_path, name: str):
    """A tiny SigLIP-style config whose tokenizer lives on the hub (never reached: HF_HUB_OFFLINE)."""
    import open_clip

    cfg = dict(
        embed_dim=16,
        custom_text=True,
        vision_cfg=dict(image_size=32, patch_size=16, width=32, layers=1, head_width=8),
        text_cfg=dict(
            context_length=16,
            vocab_size=30522,
            width=32,
            heads=4,
            layers=1,
            no_causal_mask=True,
            pool_type="last",
            hf_tokenizer_name="vx-nonexistent/tokenizer",
            tokenizer_kwargs={"clean": "canonicalize"},
        ),
    )
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(name).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return model, tmp_path / "w.pt"


def test_tokenizer_directory_on_the_spec(tmp_path, monkeypatch):
    from vlexplain.models.open_clip import minilm_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, ckpt = _register_tiny_siglip_arch(tmp_path, "vx-tiny-sig")
    with pytest.raises(ModelLoadError, match=r"tokenizer of open_clip:vx-tiny-sig.*HF_HUB_OFFLINE.*@TOKENIZER_DIR"):
        vx.load_model(f"open_clip:vx-tiny-sig/{ckpt}")
    tok_dir = tmp_path / "tok"
    minilm_tokenizer().save_pretrained(tok_dir)
    dual = vx.load_model(f"open_clip:vx-tiny-sig/{ckpt}@{tok_dir}")
    b = dual.tokenize(["Two, DOGS!"])
    assert b.shown_tokens(0) == ["two", "dogs"] and b.ids.shape[1] == 16  # cleaned, padded to the context
    with torch.no_grad():
        assert _rel(dual.encode_text(b, normalize=False), model.encode_text(b.ids, normalize=False)) < 1e-5
    with pytest.raises(ModelLoadError, match="does not exist"):
        vx.load_model(f"open_clip:vx-tiny-sig/{ckpt}@{tmp_path / 'missing'}")


@pytest.mark.parametrize("what", ["passwd", "random", "pickle"])
def test_bad_checkpoints_are_one_line_exit_2(what, tmp_path, capsys, monkeypatch):
    import pickle

    from vlexplain.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = {"passwd": "/etc/passwd", "random": str(tmp_path / "r.pt"), "pickle": str(tmp_path / "p.pt")}[what]
    if what == "random":
        (tmp_path / "r.pt").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    if what == "pickle":  # a pickle that would run code when unpickled without weights_only
        (tmp_path / "p.pt").write_bytes(pickle.dumps({"w": _Evil(tmp_path / "pwned")}))
    rc = main(["methods", "--model", f"open_clip:ViT-B-32/{path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "not a checkpoint vlexplain can load safely" in err
    assert "weights_only=False" not in err and not (tmp_path / "pwned").exists()


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


# --- hybrids: attention methods on MobileCLIP's attention stage --------------------------------------


def _own_attention(model, pixels, text_emb):
    """The literal reference on OpenCLIP's own forward: every FastViT attention block of the last
    attention stage switched to timm's unfused path, its softmax hooked, the cosine score with
    ``text_emb`` differentiated w.r.t. each; returns ([A], [dscore/dA], grid)."""
    from timm.models.fastvit import AttentionBlock

    stages = list(model.visual.trunk.stages)
    last = max(s for s, st in enumerate(stages) if any(isinstance(b, AttentionBlock) for b in st.blocks))
    mixers = [b.token_mixer for b in stages[last].blocks if isinstance(b, AttentionBlock)]
    store, hooks, sizes = [], [], []
    for m in mixers:
        m.fused_attn = False
        hooks.append(m.attn_drop.register_forward_hook(lambda mod, i, o: store.append(o)))
        hooks.append(m.register_forward_pre_hook(lambda mod, a: sizes.append(tuple(a[0].shape[-2:]))))
    try:
        with torch.enable_grad():
            px = pixels.clone().requires_grad_(True)  # frozen weights: the graph starts at the input
            emb = model.encode_image(px, normalize=True)
            score = (emb * text_emb).sum(-1)
            grads = torch.autograd.grad(score.sum(), store)
    finally:
        for h in hooks:
            h.remove()
        for m in mixers:
            m.fused_attn = True
    return [a.detach() for a in store], list(grads), sizes[-1]


def test_hybrid_splits_the_attention_stage_into_blocks(built):
    model, dual = built("open_clip-mobileclip")
    tower, trunk = dual.image, model.visual.trunk
    n_conv = len(trunk.stages) - 1
    assert tower.units == [(s, None) for s in range(n_conv)] + [
        (n_conv, j) for j in range(len(trunk.stages[-1].blocks))
    ]
    assert tower.has_attention and tower.attention_blocks == list(range(n_conv, tower.num_blocks))
    assert len(tower.attention_blocks) >= 2  # the tiny build keeps two attention blocks, so R combines blocks
    assert tower.default_layer() == 2  # the end of stage 3 of 4, as before the split
    # every parameter of the trunk's stages is in exactly one block module
    ids = [id(p) for m in tower.block_modules() for p in m.parameters()]
    assert sorted(ids) == sorted(id(p) for p in trunk.stages.parameters())


@pytest.mark.parametrize("last_only", [False, True])
def test_hybrid_chefer_and_rollout_match_the_models_own_forward(built, last_only):
    from vlexplain.attribution.attention_rollout import rollout_relevance
    from vlexplain.attribution.chefer import chefer_relevance, image_readout
    from vlexplain.models.base import frozen

    model, dual = built("open_clip-mobileclip")
    px = torch.rand(2, 3, *dual.input_size, generator=torch.Generator().manual_seed(3))
    with frozen(dual):
        te = torch.nn.functional.normalize(dual.encode_text(dual.tokenize(TEXTS)), dim=-1)
        attns, grads, (gh, gw) = _own_attention(model, px, te)

        def score(e):
            return (torch.nn.functional.normalize(e, dim=-1) * te).sum(-1)

        R = chefer_relevance(dual, dual.image, px, score, last_block_only=last_only)
        mine = image_readout(dual.image, R)
        roll = image_readout(dual.image, rollout_relevance(dual.image, px))
    T = gh * gw
    assert R.shape == (2, T, T) and mine.shape == (2, gh, gw) and dual.image.grid == (gh, gw)
    for b in range(2):
        ref = torch.eye(T)
        for i in [len(attns) - 1] if last_only else range(len(attns)):
            ref = ref + (grads[i][b] * attns[i][b]).clamp(min=0).mean(0) @ ref
        torch.testing.assert_close(mine[b], ref.mean(0).reshape(gh, gw), rtol=1e-4, atol=1e-6)
        rr = torch.eye(T)
        for A in attns:
            a = 0.5 * A[b].mean(0) + 0.5 * torch.eye(T)
            rr = (a / a.sum(-1, keepdim=True)) @ rr
        torch.testing.assert_close(roll[b], rr.mean(0).reshape(gh, gw), rtol=1e-4, atol=1e-6)
    assert float((R - torch.eye(T)).abs().max()) > 1e-6  # relevance beyond the identity


def test_hybrid_methods_and_refusals(built):
    _, dual = built("open_clip-mobileclip")
    img = torch.rand(3, *dual.input_size, generator=torch.Generator().manual_seed(4))
    for name in ("chefer", "attention_rollout", "legrad"):
        e = vx.explain(dual, img, "a cat", method=name, sides=["image"])
        assert e.image_map.shape == dual.input_size and torch.isfinite(e.image_map).all()
    e = vx.explain(dual, img, "a cat", method="legrad", blocks=5, sides=["image"])  # capped at the attention blocks
    assert torch.isfinite(e.image_map).all()
    for name in ("grad_eclip", "mask_clip", "clip_surgery"):  # CLIP-layout internals: refused, alternatives named
        why = vx.get_method(name).why_not(dual, "image")
        assert why is not None and "chefer" in why and "m2ib" in why
    with pytest.raises(vx.errors.MethodError, match="start_layer 5 is out of range"):
        vx.explain(dual, img, "a cat", method="chefer", start_layer=dual.image.num_blocks, sides=["image"])


def test_cnn_refusal_names_the_methods_that_apply(built):
    _, dual = built("open_clip-resnet")
    why = vx.get_method("chefer").why_not(dual, "image")
    assert "CNN" in why and "gradcam" in why and "m2ib" in why and "chefer" not in why.split("(")[1]


def test_hybrid_with_two_attention_stages_reads_the_last():
    """MobileCLIP2-S3/S4's wiring (FastViT-MCi3: attention in stages 4 and 5, at different grids): the
    attention methods read the last stage's blocks; the embedding is still the model's own."""
    from vlexplain.models.open_clip_timm import _tiny_custom

    m = _tiny_custom(
        dict(timm_model_name="fastvit_mci3", timm_pool="avg", timm_proj=None, image_size=192),
        dict(layers=(1, 1, 1, 1, 2), embed_dims=(16, 32, 64, 128, 256), layer_scale_init_value=0.1),
        text_cfg=dict(no_causal_mask=True),
    )
    d = vx.load_model(m)
    t = d.image
    assert t.units == [(0, None), (1, None), (2, None), (3, 0), (4, 0), (4, 1)]
    assert t.attention_blocks == [4, 5] and t.default_layer() == 3  # M2IB: the end of stage 4 of 5
    img = torch.rand(3, *d.input_size, generator=torch.Generator().manual_seed(6))
    e = vx.explain(d, img, "a cat", method="chefer", sides=["image"])
    assert tuple(e.patch_map.shape) == (3, 3) and torch.isfinite(e.image_map).all()  # stage 5: 192 / 64
    with torch.no_grad():
        x = torch.randn(2, 3, *d.input_size, generator=torch.Generator().manual_seed(7))
        assert _rel(d.encode_image(x, normalize=False), m.encode_image(x, normalize=False)) < 1e-5
