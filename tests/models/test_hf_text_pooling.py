"""Text towers pool where the model's own forward pools.

transformers' ``CLIPTextModel`` keeps a legacy rule: a config with ``eos_token_id = 2`` (older
configs, MetaCLIP 2-style checkpoints with an XLM tokenizer ``<s>=0 <pad>=1 </s>=2``) pools at the
largest id of the text, which with such a tokenizer is a word, not ``</s>``. The embeddings must
be the model's own (``get_text_features``), and a pair alone must equal the pair in a padded batch.
"""

from __future__ import annotations

import pytest
import torch

import vlexplain as vx
from vlexplain.errors import ModelLoadError
from vlexplain.models.hf_common import features, tiny_transformer

WORDS = "a photo of the cat two small dogs sleeping on red mat dog in grass".split()
TEXTS = ["a photo of the cat", "two small dogs sleeping on a red mat", "a dog"]


def xlm_tokenizer(end: str = "</s>"):
    """An XLM-R-layout tokenizer (``<s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4``, one piece per word),
    built offline; its template ends a text with ``end``."""
    from transformers import XLMRobertaTokenizer

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    vocab += [(f"▁{w}", -1.0) for w in WORDS]
    return XLMRobertaTokenizer(vocab=vocab, eos_token=end, sep_token=end)


def legacy_clip(seed: int = 0, eos: int = 2):
    """A tiny CLIPModel whose text config has the given ``eos_token_id`` (2: the legacy value)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text = tiny_transformer(2, vocab_size=5 + len(WORDS), max_position_embeddings=16)
    text.update(bos_token_id=0, pad_token_id=1, eos_token_id=eos)
    cfg = CLIPConfig(text_config=text, vision_config=tiny_transformer(2, image_size=32, patch_size=8))
    return CLIPModel(cfg).eval()


def _own(raw, tok, texts):
    ref = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return ref, features(raw.get_text_features(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_legacy_eos_clip_pools_as_its_own_forward():
    raw, tok = legacy_clip(), xlm_tokenizer()
    m = vx.load_model(raw, tokenizer=tok)
    tb = m.tokenize(TEXTS)
    ref, own = _own(raw, tok, TEXTS)
    assert torch.equal(tb.ids, ref["input_ids"]) and torch.equal(tb.attention_mask, ref["attention_mask"])
    # the legacy rule reads the largest id, a word: not the </s> position
    assert torch.equal(tb.pool_index, ref["input_ids"].argmax(-1))
    eos_pos = (tb.ids == 2).int().argmax(-1)
    assert (tb.pool_index != eos_pos).all()
    with torch.no_grad():
        ours = m.encode_text(tb, normalize=False)
        assert _rel(ours, own) < 1e-5
        # pooled at </s> the embeddings would differ far beyond float noise (the silent defect)
        h = raw.text_model(input_ids=tb.ids, attention_mask=tb.attention_mask).last_hidden_state
        at_eos = raw.text_projection(h[torch.arange(len(TEXTS)), eos_pos])
        assert _rel(at_eos, own) > 1e-2
        for i, t in enumerate(TEXTS):  # a text alone equals the same text in the padded batch
            assert _rel(m.encode_text(m.tokenize([t]), normalize=False)[0], own[i]) < 1e-5
    assert tb.shown_tokens(0) == ["a", "photo", "of", "the", "cat"]


def test_legacy_eos_clip_pair_alone_equals_pair_in_padded_batch(tmp_path):
    raw, tok = legacy_clip(), xlm_tokenizer()
    raw.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m = vx.load_model(str(tmp_path))  # the directory's own tokenizer
    assert m.tokenize(TEXTS[:1]).pool_index.tolist() == m.tokenize(TEXTS[:1]).ids.argmax(-1).tolist()
    px = torch.randn(2, 3, *m.input_size, generator=torch.Generator().manual_seed(0))
    for method, opts in (("gradcam", {}), ("grad_eclip", {}), ("m2ib", dict(steps=2, num_samples=2))):
        batch = vx.explain(m, px, TEXTS[1:], method=method, seed=0, batch_size=2, **opts)
        alone = vx.explain(m, px[1:], TEXTS[2], method=method, seed=0, **opts)
        for a, b in ((alone.patch_map, batch[1].patch_map), (alone.token_scores, batch[1].token_scores)):
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-8)
        assert alone.tokens == batch[1].tokens == ["a", "dog"]


def test_current_eos_clip_pools_at_the_first_eos():
    """With the current eos_token_id the same tokenizer layout pools at </s> (the model's own rule),
    and a tokenizer ending texts with another id is refused."""
    raw, tok = legacy_clip(eos=2), xlm_tokenizer()
    raw.config.text_config.eos_token_id = raw.text_model.config.eos_token_id = 4  # <mask> ends texts
    with pytest.raises(ModelLoadError, match="eos_token_id"):
        vx.load_model(raw, tokenizer=tok)
    raw2 = legacy_clip(eos=2)
    tok2 = xlm_tokenizer(end="<mask>")  # the tokenizer now ends texts with id 4 as well
    raw2.text_model.config.eos_token_id = raw2.text_model.eos_token_id = 4
    m = vx.load_model(raw2, tokenizer=tok2)
    tb = m.tokenize(TEXTS)
    assert torch.equal(tb.ids, tok2(TEXTS, padding=True, return_tensors="pt")["input_ids"])  # its own layout
    assert tb.ids[0, tb.pool_index[0]] == 4
    # a tokenizer told afterwards that <mask> is its end token still ends texts with </s>: refused
    tok3 = xlm_tokenizer()
    tok3.eos_token = "<mask>"
    assert tok3("a cat")["input_ids"][-1] == 2
    with pytest.raises(ModelLoadError, match="end-of-text id \\(2\\)"):
        vx.load_model(raw2, tokenizer=tok3)
    with torch.no_grad():
        own = features(raw2.get_text_features(input_ids=tb.ids, attention_mask=tb.attention_mask))
        assert _rel(m.encode_text(tb, normalize=False), own) < 1e-5


def _xlm_layout_model(kind: str, eos: int = 2):
    """A tiny model of ``kind`` whose text tower has the XLM-layout vocabulary (``</s> = 2``, the
    largest id of a text is a word) and the given ``eos_token_id``."""
    import transformers

    from vlexplain.models.hf_groupvit import tiny_groupvit

    torch.manual_seed(0)
    text = tiny_transformer(2, vocab_size=5 + len(WORDS), max_position_embeddings=16)
    text.update(bos_token_id=0, pad_token_id=1, eos_token_id=eos)
    vision = tiny_transformer(2, image_size=32, patch_size=8)
    if kind == "GroupViT":
        vision = tiny_groupvit().config.vision_config.to_dict()
    cfg = getattr(transformers, f"{kind}Config")(text_config=text, vision_config=vision)
    return getattr(transformers, f"{kind}Model")(cfg).eval()


#: (model kind, eos_token_id, where its own forward pools): the rule read from each text model's forward
RULES = [
    ("CLIP", 2, "argmax"),
    ("CLIP", 4, "eos"),
    ("CLIPSeg", 2, "argmax"),
    ("CLIPSeg", 4, "eos"),
    ("GroupViT", 2, "argmax"),
    ("OwlViT", 2, "argmax"),
    ("OwlViT", 4, "argmax"),  # OWL-ViT pools at the largest id whatever its eos_token_id
    ("Owlv2", 2, "argmax"),
    ("MetaClip2", 2, "eos"),  # MetaCLIP 2 pools at the first eos_token_id, 2 included
    ("Aimv2", 2, "eos"),
]


@pytest.mark.parametrize(("kind", "eos", "rule"), RULES, ids=[f"{k}-eos{e}" for k, e, _ in RULES])
def test_every_causal_text_tower_pools_as_its_own_forward(kind, eos, rule):
    raw, tok = _xlm_layout_model(kind, eos), xlm_tokenizer(end="</s>" if eos == 2 else "<mask>")  # eos ends texts
    m = vx.load_model(raw, tokenizer=tok)
    tb = m.tokenize(TEXTS)
    assert torch.equal(tb.ids, tok(TEXTS, padding=True, return_tensors="pt")["input_ids"])
    expected = tb.ids.argmax(-1) if rule == "argmax" else (tb.ids == eos).int().argmax(-1)
    assert torch.equal(tb.pool_index, expected)
    with torch.no_grad():
        own = features(raw.get_text_features(input_ids=tb.ids, attention_mask=tb.attention_mask))
        assert _rel(m.encode_text(tb, normalize=False), own) < 1e-5
        assert _rel(m.encode_text(m.tokenize(TEXTS[2:]), normalize=False)[0], own[2]) < 1e-5
