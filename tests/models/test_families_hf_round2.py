"""The second round of transformers families, beyond what test_families_hf.py checks for every
family: the CLIP towers inside detectors and segmenters, MetaCLIP 2 with its XLM-layout tokenizer,
VisionTextDualEncoderModel of a CLIP vision tower and RoBERTa, and the one-line refusals at load
(BLIP-2's retrieval model, encoders a dual encoder is built from that vlexplain does not explain,
projections that do not match their towers)."""

from __future__ import annotations

import pytest
import torch

import vlexplain as vx
from vlexplain.cli import main
from vlexplain.errors import ModelLoadError
from vlexplain.models.hf_common import features, tiny_transformer
from vlexplain.models.tiny_tokenizers import xlm_tokenizer

TEXTS = ["a cat", "two small dogs sleeping on a red mat"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _check_own(m, clip, px, texts=TEXTS):
    """``m``'s embeddings equal ``clip``'s get_*_features, and a text alone equals it in a padded batch."""
    tb = m.tokenize(texts)
    with torch.no_grad():
        ie = features(clip.get_image_features(pixel_values=px))
        te = features(clip.get_text_features(input_ids=tb.ids, attention_mask=tb.attention_mask))
        assert _rel(m.encode_image(px, normalize=False), ie) < 1e-5
        assert _rel(m.encode_text(tb, normalize=False), te) < 1e-5
        assert _rel(m.encode_text(m.tokenize(texts[:1]), normalize=False)[0], te[0]) < 1e-5


def _detector(kind: str):
    import transformers

    torch.manual_seed(0)
    cfg = getattr(transformers, f"{kind}Config")(
        text_config=tiny_transformer(2, vocab_size=49408, max_position_embeddings=16),
        vision_config=tiny_transformer(2, image_size=32, patch_size=8),
    )
    if kind == "CLIPSeg":
        cfg.extract_layers, cfg.reduce_dim = [1], 16
        return transformers.CLIPSegForImageSegmentation(cfg).eval(), "clip"
    return getattr(transformers, f"{kind}ForObjectDetection")(cfg).eval(), kind.lower()


@pytest.mark.parametrize("kind", ["OwlViT", "Owlv2", "CLIPSeg"])
def test_detectors_and_segmenters_explain_their_clip_backbone(kind, tmp_path):
    """The detector / segmenter class, in memory and from its directory, is explained through the
    CLIP model inside it: the embeddings are that model's own."""
    det, attr = _detector(kind)
    clip = getattr(det, attr)
    m = vx.load_model(det)
    assert m.model is clip
    px = torch.randn(2, 3, *m.input_size, generator=torch.Generator().manual_seed(0))
    _check_own(m, clip, px)
    det.save_pretrained(tmp_path)
    d = vx.load_model(str(tmp_path))
    assert type(d.model).__name__ == type(clip).__name__  # the backbone class, its weights read out
    _check_own(d, clip, px)
    e = vx.explain(d, px[0], TEXTS[1], method="gradcam")
    assert torch.isfinite(e.patch_map).all() and e.tokens == [
        "two",
        "small",
        "dogs",
        "sleeping",
        "on",
        "a",
        "red",
        "mat",
    ]


def test_metaclip2_pools_at_its_first_eos_and_shows_words(tmp_path):
    from vlexplain.models.hf_clip_variants import tiny_metaclip2

    raw, tok = tiny_metaclip2(), xlm_tokenizer()
    with pytest.raises(ModelLoadError, match="needs its tokenizer"):  # never CLIP's BPE by default
        vx.load_model(raw)
    m = vx.load_model(raw, tokenizer=tok)
    tb = m.tokenize(TEXTS)
    ref = tok(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(tb.ids, ref["input_ids"])
    assert torch.equal(tb.pool_index, (tb.ids == 2).int().argmax(-1))  # </s>, not the largest id
    assert tb.shown_tokens(1) == TEXTS[1].split()
    px = torch.randn(2, 3, *m.input_size, generator=torch.Generator().manual_seed(1))
    _check_own(m, raw, px)


def test_vision_text_dual_encoder_clip_vision_and_roberta(tmp_path):
    """A CLIP vision tower with a RoBERTa text tower (``<s>=0 <pad>=1 </s>=2``, pooled at <s> through
    RoBERTa's pooler): the model's own embeddings, in memory and from its directory; a pair alone
    equals the pair in a padded batch."""
    from vlexplain.models.hf_dual_encoder import tiny_clip_roberta

    tok = xlm_tokenizer()
    raw = tiny_clip_roberta(len(tok))
    with pytest.raises(ModelLoadError, match="needs its tokenizer"):
        vx.load_model(raw)
    m = vx.load_model(raw, tokenizer=tok)
    assert type(m.image).__name__ == "ClipViTTower" and type(m.text).__name__ == "BertTextTower"
    px = torch.randn(2, 3, *m.input_size, generator=torch.Generator().manual_seed(2))
    _check_own(m, raw, px)
    raw.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    d = vx.load_model(str(tmp_path))
    _check_own(d, raw, px)
    for method, opts in (("chefer", {}), ("m2ib", dict(steps=2, num_samples=2))):
        batch = vx.explain(d, px, TEXTS, method=method, seed=0, batch_size=2, **opts)
        alone = vx.explain(d, px[:1], TEXTS[0], method=method, seed=0, **opts)
        for a, b in ((alone.patch_map, batch[0].patch_map), (alone.token_scores, batch[0].token_scores)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-8)
        assert alone.tokens == batch[0].tokens == ["a", "cat"]


def test_vision_text_dual_encoder_of_other_encoders_is_refused():
    from transformers import (
        BertConfig,
        SwinConfig,
        VisionTextDualEncoderConfig,
        VisionTextDualEncoderModel,
    )

    swin = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=4)
    cfg = VisionTextDualEncoderConfig.from_vision_text_configs(
        swin, BertConfig(**tiny_transformer(1, vocab_size=30522)), projection_dim=8
    )
    with pytest.raises(ModelLoadError, match="SwinModel vision encoder") as e:
        vx.load_model(VisionTextDualEncoderModel(cfg))
    assert "\n" not in str(e.value) and "ViTModel" in str(e.value)


def _image(tmp_path):
    import numpy as np
    from PIL import Image

    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(img)
    return str(img)


def _blip2():
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    torch.manual_seed(0)
    cfg = Blip2Config(
        vision_config=tiny_transformer(1, image_size=32, patch_size=16),
        qformer_config=tiny_transformer(1, vocab_size=100, encoder_hidden_size=32),
        num_query_tokens=2,
        image_text_hidden_size=16,
    )
    return Blip2ForImageTextRetrieval(cfg).eval()


def test_blip2_retrieval_is_refused_in_one_line(tmp_path, capsys):
    raw = _blip2()
    with pytest.raises(ModelLoadError, match="maximum over its query embeddings") as e:
        vx.load_model(raw)
    assert "\n" not in str(e.value)
    raw.save_pretrained(tmp_path / "blip2")
    capsys.readouterr()
    rc = main(["explain", _image(tmp_path), "-t", "a cat", "-m", str(tmp_path / "blip2"), "-o", str(tmp_path / "o")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "Blip2ForImageTextRetrieval" in err[0] and "query embeddings" in err[0]
    assert not (tmp_path / "o").exists()
    from vlexplain.commands.family_table import markdown_table

    assert "Blip2ForImageTextRetrieval" in markdown_table()


def _mismatched_siglip():
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(0)
    cfg = SiglipConfig(
        text_config=tiny_transformer(2, vocab_size=49408, max_position_embeddings=16, projection_size=16),
        vision_config=tiny_transformer(2, image_size=32, patch_size=8),
    )
    return SiglipModel(cfg).eval()


def test_a_projection_that_does_not_match_its_towers_is_refused_at_load(tmp_path, capsys):
    from vlexplain.models.hf_clip import tiny_clip

    raw = _mismatched_siglip()
    with pytest.raises(RuntimeError):  # the model's own forward rejects it too
        with torch.no_grad():
            raw(input_ids=torch.ones(1, 16, dtype=torch.long), pixel_values=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ModelLoadError, match="32 dimensions and the text embedding 16"):
        vx.load_model(raw)
    bad = tiny_clip()
    bad.text_projection = torch.nn.Linear(48, 16, bias=False)  # does not fit the 32-wide text tower
    with pytest.raises(ModelLoadError, match="text tower does not produce an embedding"):
        vx.load_model(bad)
    raw.save_pretrained(tmp_path / "m")
    capsys.readouterr()
    rc = main(["explain", _image(tmp_path), "-t", "a cat", "-m", str(tmp_path / "m"), "-o", str(tmp_path / "o")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("Loading weights")]
    assert rc == 2 and len(err) == 1 and "do not match" in err[0], err
    assert not (tmp_path / "o").exists()


def test_vision_text_dual_encoder_deit_and_clip_text():
    """DeiT (class and distillation tokens, pooled through its pooler) with CLIP's text model (pooled
    as CLIPModel's): the model's own embeddings."""
    from transformers import CLIPTextConfig, DeiTConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    torch.manual_seed(0)
    cfg = VisionTextDualEncoderConfig.from_vision_text_configs(
        DeiTConfig(**tiny_transformer(2, image_size=32, patch_size=8)),
        CLIPTextConfig(**tiny_transformer(2, vocab_size=49408, max_position_embeddings=16)),
        projection_dim=16,
    )
    raw = VisionTextDualEncoderModel(cfg).eval()
    m = vx.load_model(raw)  # CLIP's BPE for a 49408-row CLIP text table
    assert m.image.num_prefix_tokens == 2 and m.image.grid == (4, 4)
    _check_own(m, raw, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
    e = vx.explain(m, torch.randn(3, 32, 32), TEXTS[1], method="chefer")
    assert e.patch_map.shape == (4, 4) and torch.isfinite(e.token_scores).all()


def test_the_load_time_probe_leaves_batch_norm_statistics_alone():
    """GroupViT's projections hold BatchNorm layers: a model handed over in training mode is put in
    eval mode before the embedding-size probe runs, so its running statistics stay as they were."""
    from vlexplain.models.hf_groupvit import tiny_groupvit

    raw = tiny_groupvit().train()
    before = {k: v.clone() for k, v in raw.state_dict().items() if "running" in k or "num_batches" in k}
    assert before
    vx.load_model(raw)
    after = raw.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
