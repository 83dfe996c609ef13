"""The second round of OpenCLIP families from local directories (open_clip_config.json + weights,
offline): a relative-position ViT with a shared bias, Swin, and NLLB-CLIP (an M2M-100
encoder text tower, its config and tokenizer in the directory). Embeddings equal the model's own;
the methods run on the directory's model."""

from __future__ import annotations

import json

import pytest
import torch

import vlexplain as vx
from vlexplain.models.tiny_tokenizers import nllb_tokenizer

TEXTS = ["a photo of a small cat", "two dogs"]
_TEXT = dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=1)
#: (vision config, timm overrides that shrink the trunk while it is built): a ViT with one relative-
#: position bias shared by every block, and Swin
VISION = {
    "srelpos": (
        dict(timm_model_name="vit_srelpos_small_patch16_224", timm_pool="", timm_proj="linear", image_size=32),
        dict(embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8),
    ),
    "swin": (
        dict(timm_model_name="swin_tiny_patch4_window7_224", timm_pool="", timm_proj="linear", image_size=32),
        dict(embed_dim=16, depths=(1, 1), num_heads=(2, 4), window_size=4, img_size=32),
    ),
}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _local_dir(d, cfg: dict, files=None):
    """A local-dir OpenCLIP model: the config, then weights of the model open_clip builds from it."""
    from open_clip.factory import create_model

    d.mkdir(exist_ok=True)
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    if files is not None:
        files(d)
    torch.manual_seed(0)
    model = create_model(f"local-dir:{d}").eval()
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    return model


@pytest.mark.parametrize("kind", list(VISION))
def test_timm_trunks_load_from_a_local_directory(kind, tmp_path, monkeypatch):
    from vlexplain.models.open_clip_timm import tiny_timm_models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vision, small = VISION[kind]
    cfg = dict(embed_dim=16, vision_cfg=vision, text_cfg=_TEXT, custom_text=True)
    with tiny_timm_models(**small):  # the directory's architecture, at a tiny width
        model = _local_dir(tmp_path / kind, cfg)
        dual = vx.load_model(str(tmp_path / kind))
    if kind == "srelpos":
        assert model.visual.trunk.shared_rel_pos is not None
    x = torch.randn(1, 3, *dual.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert _rel(dual.encode_image(x, normalize=False), model.encode_image(x, normalize=False)) < 1e-5
    e = vx.explain(dual, x[0], TEXTS[0], method="gradcam", sides=["image"])
    assert torch.isfinite(e.patch_map).all() and e.image_map.shape == dual.input_size
    if kind != "swin":  # class-token ViTs: the grid is the trunk's own and the attention methods apply
        assert dual.image.grid == tuple(model.visual.trunk.patch_embed.grid_size)
        assert torch.isfinite(vx.explain(dual, x[0], TEXTS[0], method="chefer", sides=["image"]).patch_map).all()


def test_nllb_clip_loads_from_a_local_directory(tmp_path, monkeypatch):
    """nllb-clip-base's config with a tiny NLLB encoder (its transformers config in a subfolder) and
    the tokenizer its config names in the directory: pooled at the first token, padding masked."""
    from transformers import M2M100Config, M2M100Model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = nllb_tokenizer()
    nllb = tmp_path / "nllb-config"
    torch.manual_seed(0)
    M2M100Model(
        M2M100Config(
            vocab_size=len(tok),
            d_model=32,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            scale_embedding=True,
        )
    ).save_pretrained(nllb)  # fmt: skip  (open_clip reads the text model's pretrained weights, then the checkpoint's)
    cfg = dict(
        embed_dim=16,
        vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=16, head_width=8),
        text_cfg=dict(
            hf_model_name=str(nllb),
            hf_tokenizer_name=str(nllb),
            hf_proj_type="linear",
            hf_pooler_type="cls_pooler",
            hf_model_pretrained=False,
        ),
    )
    d = tmp_path / "clip"
    model = _local_dir(d, cfg, files=lambda d: tok.save_pretrained(d))
    dual = vx.load_model(str(d))
    assert type(dual.text).__name__ == "M2M100EncoderTower"
    import open_clip

    ids = open_clip.get_tokenizer(f"local-dir:{d}")(TEXTS)  # the model's own pipeline: padded to 64
    batch = dual.tokenize(TEXTS)
    assert (batch.ids[:, 0] == tok.convert_tokens_to_ids("eng_Latn")).all()  # pooled at the language code
    with torch.no_grad():
        own = model.encode_text(ids, normalize=False)
        assert _rel(dual.encode_text(batch, normalize=False), own) < 1e-5
        assert _rel(dual.encode_text(dual.tokenize(TEXTS[1:]), normalize=False)[0], own[1]) < 1e-5
    assert batch.shown_tokens(0) == TEXTS[0].split()
    e = vx.explain(dual, torch.randn(3, 32, 32), TEXTS[0], method="chefer", sides=["text"])
    assert e.tokens == TEXTS[0].split() and torch.isfinite(e.token_scores).all()


def test_nllb_clip_with_a_transformers_tokenizer_lays_texts_out_as_its_pipeline(tmp_path, monkeypatch):
    """NLLB's tokenizer starts a text with its source-language code, not ``<s>``: passed as a
    transformers tokenizer it lays texts out as open_clip's HFTokenizer (the model's own pipeline) does,
    so the first token the tower pools is the language code and the embeddings are the model's own."""
    from open_clip.tokenizer import HFTokenizer

    from vlexplain.models.open_clip import tiny_nllb_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = nllb_tokenizer()
    tok.save_pretrained(tmp_path)
    model = tiny_nllb_clip().model
    dual = vx.load_model(model, tokenizer=tok)
    own_ids = HFTokenizer(str(tmp_path), context_length=64)(TEXTS)
    batch = dual.tokenize(TEXTS)
    assert torch.equal(batch.ids, own_ids[:, : batch.ids.shape[1]]) and (own_ids[:, batch.ids.shape[1] :] == 1).all()
    assert batch.pool_index.tolist() == [0, 0] and int(batch.ids[0, 0]) == tok.convert_tokens_to_ids("eng_Latn")
    with torch.no_grad():
        own = model.encode_text(own_ids, normalize=False)
        assert _rel(dual.encode_text(batch, normalize=False), own) < 1e-5
        # pooled at <s> instead, as a start token read from bos_token_id would have it: another embedding
        wrong = batch.ids.clone()
        wrong[:, 0] = tok.bos_token_id
        assert _rel(model.encode_text(wrong, normalize=False), own) > 1e-2
    assert batch.shown_tokens(0) == TEXTS[0].split()
