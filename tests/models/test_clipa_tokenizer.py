"""CLIPA: open_clip's CLIPA configs pair a bert-base-uncased tokenizer (30,522 tokens) with a
32,000-row embedding table, past the padding the vocabulary check allows. A tokenizer the model's
own config names is accepted (through an ``open_clip:`` spec or a local directory), its tokens are
shown as words, and the whole text is mapped; the model's embeddings are its own. Built offline: a
tiny CLIPA-style config (bidirectional text pooled at the last position, ``strip_sep_token``) and a
small WordPiece vocabulary in bert-base-uncased's layout."""

from __future__ import annotations

import json

import pytest
import torch

import vlexplain as vx
from vlexplain.errors import ModelLoadError
from vlexplain.models.tiny_tokenizers import bert_tokenizer

TEXTS = ["a photo of a small cat on the floor", "two dogs"]
#: ViT-L-14-CLIPA's wiring at a tiny width; the table has 400 rows, the tokenizer 140 tokens
CFG = dict(
    embed_dim=16,
    vision_cfg=dict(
        image_size=32,
        layers=2,
        width=32,
        patch_size=8,
        head_width=8,
        no_ln_pre=True,
        pool_type="avg",
        final_ln_after_pool=True,
    ),
    text_cfg=dict(
        context_length=16,
        vocab_size=400,
        hf_tokenizer_name="bert-base-uncased",
        tokenizer_kwargs={"strip_sep_token": True},
        width=32,
        heads=4,
        layers=2,
        pool_type="last",
        no_causal_mask=True,
    ),
)


@pytest.fixture
def clipa_dir(tmp_path, monkeypatch):
    """A local-dir CLIPA: open_clip_config.json, weights, and the tokenizer files its config names."""
    from open_clip.factory import create_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "clipa"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": CFG}))
    torch.manual_seed(0)
    model = create_model(f"local-dir:{d}").eval()
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    bert_tokenizer().save_pretrained(d)
    return d, model


def _check(dual, model, own_tokenizer):
    """The model's own embeddings (ids from its own open_clip tokenizer), words shown, last word mapped."""
    ids = own_tokenizer(TEXTS)
    batch = dual.tokenize(TEXTS)
    assert torch.equal(batch.ids, ids)  # CLIPA pads to its context and attends to the padding
    assert 102 not in ids.tolist()[0]  # [SEP] stripped, as CLIPA's config says
    with torch.no_grad():
        mine = dual.encode_text(batch, normalize=False)
        assert float((mine - model.encode_text(ids)).abs().max()) <= 1e-5 * float(mine.abs().max())
    assert batch.shown_tokens(0) == TEXTS[0].split() and batch.shown_tokens(1) == ["two", "dogs"]
    e = vx.explain(dual, torch.randn(3, 32, 32), TEXTS[1], method="gradcam", sides=["text"])
    assert e.tokens == ["two", "dogs"] and e.token_scores.shape == (2,) and torch.isfinite(e.token_scores).all()


def test_local_directory_with_the_tokenizer_its_config_names(clipa_dir):
    import open_clip

    d, model = clipa_dir
    dual = vx.load_model(str(d))
    _check(dual, model, open_clip.get_tokenizer(f"local-dir:{d}"))


def test_architecture_with_a_local_tokenizer_directory(clipa_dir, tmp_path):
    """``open_clip:ARCH/CKPT@DIR`` for an architecture whose config names the tokenizer."""
    import open_clip

    d, model = clipa_dir
    (tmp_path / "vx-tiny-clipa.json").write_text(json.dumps(CFG))
    open_clip.add_model_config(tmp_path / "vx-tiny-clipa.json")
    dual = vx.load_model(f"open_clip:vx-tiny-clipa/{d / 'open_clip_pytorch_model.bin'}@{d}")
    from open_clip.tokenizer import HFTokenizer

    _check(dual, model, HFTokenizer(str(d), context_length=16, strip_sep_token=True))


def test_a_tokenizer_no_config_names_is_still_refused(clipa_dir):
    """The same tokenizer passed by hand to the in-memory model: nothing says it is the model's own, so
    a table 260 rows past its vocabulary is refused, naming the spec that accepts it."""
    from open_clip.tokenizer import HFTokenizer

    d, model = clipa_dir
    with pytest.raises(ModelLoadError, match="400 rows") as e:
        vx.load_model(model, tokenizer=HFTokenizer(str(d), context_length=16, strip_sep_token=True))
    assert "open_clip:ARCH/WEIGHTS@TOKENIZER_DIR" in str(e.value) and "\n" not in str(e.value)
