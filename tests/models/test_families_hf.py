"""The transformers families: every one loads from an in-memory model and from a save_pretrained
directory, its embeddings equal the model's own, and a pair alone equals the same pair in a padded
batch. The tiny random-weight configs come from the families table (no download)."""

from __future__ import annotations

import warnings

import pytest
import torch

import vlexplain as vx
from vlexplain.errors import InputError, ModelLoadError
from vlexplain.models.families import families, get_family
from vlexplain.models.hf_common import (
    HFAdapter,
    entry_for_model,
    features,
    minilm_bert_tokenizer,
)

HF_KEYS = [f.key for f in families() if f.library == "transformers"]
BERT_TEXT = {"hf-align", "hf-altclip", "hf-chinese-clip", "hf-blip"}
TEXTS = ["a cat", "two small dogs sleeping on a red mat"]  # different lengths: padding differs


@pytest.fixture(scope="module")
def raw_models():
    cache: dict[str, torch.nn.Module] = {}

    def get(key: str):
        if key not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[key] = get_family(key).tiny()
        return cache[key]

    return get


def _tokenizer(key: str):
    return minilm_bert_tokenizer() if key in BERT_TEXT else None


def _own_features(raw, m, px, tb):
    """The model's own image and text embeddings (transformers' get_*_features)."""
    with torch.no_grad():
        if type(raw).__name__ == "Siglip2Model":
            from vlexplain.models.hf_siglip2 import patchify

            gh, gw = m.image.grid
            n = px.shape[0]
            ie = features(
                raw.get_image_features(
                    pixel_values=patchify(px, m.image.patch),
                    pixel_attention_mask=torch.ones(n, gh * gw, dtype=torch.long),
                    spatial_shapes=torch.tensor([[gh, gw]] * n),
                )
            )
        elif type(raw).__name__ == "BlipForImageTextRetrieval":  # no get_*_features: its ITC forward pieces
            ie = raw.vision_proj(raw.vision_model(pixel_values=px).last_hidden_state[:, 0])
        else:
            ie = features(raw.get_image_features(pixel_values=px))
        if type(raw).__name__ == "BlipForImageTextRetrieval":
            te = raw.text_proj(
                raw.text_encoder(input_ids=tb.ids, attention_mask=tb.attention_mask).last_hidden_state[:, 0]
            )
        elif "Siglip" in type(raw).__name__:  # SigLIP: padded to the context, no mask
            te = features(raw.get_text_features(input_ids=tb.ids))
        else:
            te = features(raw.get_text_features(input_ids=tb.ids, attention_mask=tb.attention_mask))
    return ie, te


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("key", HF_KEYS)
def test_embeddings_equal_the_models_own(key, raw_models):
    raw = raw_models(key)
    m = vx.load_model(raw, tokenizer=_tokenizer(key))
    assert isinstance(m, HFAdapter) and entry_for_model(raw).family == key
    g = torch.Generator().manual_seed(0)
    px = torch.randn(2, 3, *m.input_size, generator=g)
    tb = m.tokenize(TEXTS)
    ie, te = _own_features(raw, m, px, tb)
    with torch.no_grad():
        assert _rel(m.encode_image(px, normalize=False), ie) < 1e-5
        assert _rel(m.encode_text(tb, normalize=False), te) < 1e-5
        # a text alone equals the same text inside a padded batch
        alone = m.encode_text(m.tokenize(TEXTS[:1]), normalize=False)
        assert _rel(alone[0], te[0]) < 1e-5
        if key == "hf-blip":  # the score is the one the retrieval model's contrastive path gives
            itc = raw(input_ids=tb.ids, attention_mask=tb.attention_mask, pixel_values=px, use_itm_head=False).itm_score
            torch.testing.assert_close(m.encode_image(px) @ m.encode_text(tb).T, itc, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", HF_KEYS)
def test_pair_alone_equals_pair_in_padded_batch(key, raw_models):
    m = vx.load_model(raw_models(key), tokenizer=_tokenizer(key))
    g = torch.Generator().manual_seed(1)
    px = torch.randn(2, 3, *m.input_size, generator=g)
    for method, opts in (("gradcam", {}), ("m2ib", dict(steps=2, num_samples=2))):
        batch = vx.explain(m, px, TEXTS, method=method, seed=0, batch_size=2, **opts)
        alone = vx.explain(m, px[:1], TEXTS[0], method=method, seed=0, **opts)
        for a, b in ((alone.patch_map, batch[0].patch_map), (alone.token_scores, batch[0].token_scores)):
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-8)
        assert alone.tokens == batch[0].tokens


@pytest.mark.parametrize("key", HF_KEYS)
def test_loads_from_a_save_pretrained_directory(key, raw_models, tmp_path):
    raw = raw_models(key)
    raw.save_pretrained(tmp_path)
    tok = _tokenizer(key)
    if tok is not None:
        tok.save_pretrained(tmp_path)
    m = vx.load_model(str(tmp_path))
    assert type(m.model) is type(raw), f"{key} directory loaded into {type(m.model).__name__}"
    ref = vx.load_model(raw, tokenizer=tok)
    px = torch.randn(1, 3, *ref.input_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(m.encode_image(px), ref.encode_image(px), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            m.encode_text(m.tokenize(TEXTS)), ref.encode_text(ref.tokenize(TEXTS)), rtol=1e-5, atol=1e-6
        )


def test_siglip2_directory_is_not_loaded_as_siglip(raw_models, tmp_path):
    raw = raw_models("hf-siglip2")
    raw.save_pretrained(tmp_path)
    m = vx.load_model(str(tmp_path))
    assert type(m.model).__name__ == "Siglip2Model" and type(m).__name__ == "Siglip2DualEncoder"


def test_siglip2_naflex_batch_with_a_shape_per_image(raw_models):
    """Processor-style input: padded patches, a different (h, w) per image, as the model's own."""
    from vlexplain.models.hf_siglip2 import Siglip2DualEncoder

    raw = raw_models("hf-siglip2")
    m = Siglip2DualEncoder(raw)
    n = raw.config.vision_config.num_patches
    D = 3 * m.image.patch**2
    g = torch.Generator().manual_seed(3)
    pv = torch.randn(3, n, D, generator=g)
    shapes = torch.tensor([[4, 4], [2, 7], [3, 2]])
    mask = (torch.arange(n)[None] < shapes.prod(1)[:, None]).long()
    with torch.no_grad():
        own = features(raw.get_image_features(pixel_values=pv, pixel_attention_mask=mask, spatial_shapes=shapes))
        ours = m.encode_naflex(pv, mask, shapes, normalize=False)
        assert _rel(ours, own) < 1e-5
        # the padded patches do not matter
        pv2 = pv.clone()
        pv2[mask == 0] = 7.0
        assert _rel(m.encode_naflex(pv2, mask, shapes, normalize=False), own) < 1e-5


def test_siglip2_non_square_input_gives_maps_at_its_shape(raw_models):
    from vlexplain.models.hf_siglip2 import Siglip2DualEncoder, naflex_size, patchify

    raw = raw_models("hf-siglip2")
    P = raw.config.vision_config.patch_size
    m = Siglip2DualEncoder(raw, aspect=(300, 1000))  # a wide photo: the processor's own choice
    H, W = m.input_size
    assert (H, W) == naflex_size(300, 1000, P, 16) and W > H and (H // P) * (W // P) <= 16
    px = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        own = features(
            raw.get_image_features(
                pixel_values=patchify(px, P),
                pixel_attention_mask=torch.ones(1, (H // P) * (W // P), dtype=torch.long),
                spatial_shapes=torch.tensor([[H // P, W // P]]),
            )
        )
        assert _rel(m.encode_image(px, normalize=False), own) < 1e-5
    e = vx.explain(m, px, "a cat", method="chefer")
    assert tuple(e.patch_map.shape) == (H // P, W // P) and tuple(e.image_map.shape) == (H, W)
    with pytest.raises(ModelLoadError, match="multiples of the patch size"):
        Siglip2DualEncoder(raw, input_size=(20, 64))
    with pytest.raises(InputError, match="takes"):
        m.encode_image(torch.zeros(1, 3, 64, 64))


def test_bert_tokenizer_fallback_only_for_its_vocabulary(raw_models):
    raw = raw_models("hf-chinese-clip")
    assert vx.load_model(raw).tokenize(["a cat"]).ids[0, 0] == 101  # [CLS]: the pooled position
    from vlexplain.models.hf_bert_clips import tiny_chinese_clip

    big = tiny_chinese_clip()
    big.text_model.resize_token_embeddings(21128)  # Chinese-CLIP's own vocabulary size
    with pytest.raises(ModelLoadError, match="needs its tokenizer"):
        vx.load_model(big)


def test_tokenizer_larger_than_the_embedding_table_is_refused(raw_models):
    from vlexplain.models.hf_clip import tiny_clip

    small = tiny_clip()
    small.text_model.resize_token_embeddings(1000)
    with pytest.raises(ModelLoadError, match="1000 rows"):
        vx.load_model(small, tokenizer=minilm_bert_tokenizer())
    with pytest.raises(ModelLoadError, match="cannot use a"):
        vx.load_model(raw_models("hf-clip"), tokenizer=object())


def test_unsupported_transformers_models_are_refused(tmp_path):
    from transformers import BertConfig, BertModel, BlipConfig, BlipForQuestionAnswering

    with pytest.raises(ModelLoadError, match="supported transformers dual encoders"):
        vx.load_model(
            BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64))
        )
    cfg = BlipConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            vocab_size=30522,
            encoder_hidden_size=32,
            bos_token_id=101,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=32,
            patch_size=16,
        ),
    )
    BlipForQuestionAnswering(cfg).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="BlipForQuestionAnswering checkpoint"):
        vx.load_model(str(tmp_path))


def test_processor_normalisation_matches_the_processors_output(raw_models):
    """ALIGN's processor maps pixels to [-1, 1] (rescale offset, no normalize); CLIP's subtracts a
    mean: the adapter's (x - mean) / std reproduces both, and ALIGN takes the processor's crop size."""
    import numpy as np
    from PIL import Image
    from transformers import (
        AlignProcessor,
        CLIPImageProcessor,
        EfficientNetImageProcessor,
    )

    img = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    ip = EfficientNetImageProcessor(
        size={"height": 32, "width": 32},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        do_normalize=False,
        rescale_factor=1 / 127.5,
        rescale_offset=True,
        include_top=False,
    )
    cp = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    align = vx.load_model(
        raw_models("hf-align"), preprocess=AlignProcessor(image_processor=ip, tokenizer=minilm_bert_tokenizer())
    )
    clip = vx.load_model(raw_models("hf-clip"), preprocess=cp)
    assert align.input_size == (32, 32) and align.mean == (0.5, 0.5, 0.5)
    for m, proc in ((align, ip), (clip, cp)):
        ref = proc(images=img, return_tensors="pt")["pixel_values"][0]
        ours = (x - torch.tensor(m.mean).view(3, 1, 1)) / torch.tensor(m.std).view(3, 1, 1)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def _gemma_style_tokenizer():
    """A small SigLIP 2 tokenizer (Gemma layout: <bos> first, no end token, left padding, padding
    masked) with a handful of words, built offline."""
    from tokenizers import processors
    from transformers.models.siglip2.tokenization_siglip2 import Siglip2Tokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    merges = []
    for w in ["▁a", "▁photo", "▁of", "▁cat", "▁two", "▁dogs", "▁on", "▁the", "▁mat", "▁small"]:
        for c in w:
            vocab.setdefault(c, len(vocab))
        cur = w[0]
        for c in w[1:]:
            merges.append((cur, c))
            cur += c
            vocab.setdefault(cur, len(vocab))
    tok = Siglip2Tokenizer(vocab=vocab, merges=merges)
    tok._tokenizer.pre_tokenizer = None
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tok


def test_siglip2_tokenizer_as_its_processor_lays_texts_out(raw_models):
    """Left padding to the context, <bos> first, padding masked: the same ids and mask as
    tokenizer(..., padding="max_length"), and the model's own text embeddings."""
    from vlexplain.models.hf_siglip2 import Siglip2DualEncoder

    raw, tok = raw_models("hf-siglip2"), _gemma_style_tokenizer()
    m = Siglip2DualEncoder(raw, tokenizer=tok)
    texts = ["a cat", "two small dogs on the mat"]
    tb = m.tokenize(texts)
    ref = tok(
        texts, padding="max_length", max_length=raw.config.text_config.max_position_embeddings, return_tensors="pt"
    )
    assert torch.equal(tb.ids, ref["input_ids"]) and torch.equal(tb.attention_mask, ref["attention_mask"])
    assert tb.shown_tokens(0) == ["a", "cat"] and int(tb.ids[0, -3]) == 2  # <bos>, then the words, at the right end
    with torch.no_grad():
        own = features(raw.get_text_features(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]))
        assert _rel(m.encode_text(tb, normalize=False), own) < 1e-5
        assert _rel(m.encode_text(m.tokenize(texts[:1]), normalize=False)[0], own[0]) < 1e-5
    e = vx.explain(m, torch.zeros(3, *m.input_size), texts[1], method="chefer", sides=["text"])
    assert e.tokens == tb.shown_tokens(1) and e.token_scores.shape == (len(e.tokens),)
    assert torch.isfinite(e.token_scores).all()


def test_siglip2_input_size_from_the_spec_and_the_command_line(raw_models, tmp_path, capsys):
    """``SPEC#size=HxW`` / ``#aspect=HxW`` (and load_model's input_size= / aspect=) choose the SigLIP 2
    image shape everywhere a spec is accepted; other models and malformed options are refused."""
    import json

    import numpy as np
    from PIL import Image

    from vlexplain.cli import main
    from vlexplain.models.hf_clip import tiny_clip
    from vlexplain.models.hf_siglip2 import naflex_size

    d = tmp_path / "siglip2"
    raw_models("hf-siglip2").save_pretrained(d)
    m = vx.load_model(f"{d}#size=16x64")
    assert m.input_size == (16, 64) and m.image.grid == (2, 8) and m.name.endswith("#size=16x64")
    assert vx.load_model(f"{d}#aspect=300x1000").input_size == naflex_size(300, 1000, 8, 16)
    assert vx.load_model(str(d), aspect=(300, 1000)).input_size == naflex_size(300, 1000, 8, 16)
    assert vx.load_model(str(d)).input_size == (32, 32)  # the square that fills the patch budget

    img = tmp_path / "wide.png"
    Image.fromarray((np.random.default_rng(0).random((30, 100, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "out"
    rc = main(["explain", str(img), "-t", "a cat", "-m", f"{d}#size=16x64", "--method", "chefer", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    saved = json.loads(next(out.glob("*.json")).read_text())
    assert saved["image_map_shape"] == [16, 64] and np.asarray(saved["patch_map"]).shape == (2, 8)
    assert saved["settings"]["model"].endswith("#size=16x64")

    clip_dir = tmp_path / "clip"
    tiny_clip().save_pretrained(clip_dir)
    capsys.readouterr()  # the save's progress bars
    for spec, msg in (
        (f"{d}#size=20x64", "multiples of the patch size"),
        (f"{d}#size=64x64", "at most 16 patches"),
        (f"{d}#size=big", "expected #size=HxW"),
        (f"{d}#aspect=3", "expected #size=HxW"),
        (f"{d}#size=16x64,aspect=3x4", "not both"),
        (f"{clip_dir}#size=32x32", "any image size"),
    ):
        rc = main(["explain", str(img), "-t", "a cat", "-m", spec, "-o", str(tmp_path / "o2")])
        err = capsys.readouterr().err.strip().splitlines()
        err = [line for line in err if line.strip() and not line.startswith(("Loading weights", "warning"))]
        assert rc == 2 and len(err) == 1 and msg in err[0], err
