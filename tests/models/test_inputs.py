"""Bad and unusual input: clear errors, correct conversions, nothing half-written."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import vlexplain as vx
from vlexplain.errors import InputError, MethodError, ModelLoadError
from vlexplain.images import load_image


@pytest.fixture
def rgb():
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :30] = (255, 0, 0)
    a[:, 30:] = (0, 0, 255)
    return a


def test_missing_empty_truncated_nonimage(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "empty.png")
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (10, 200, 30)).save(buf, format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(InputError, match="truncated|corrupt|cannot read"):
        load_image(tmp_path / "trunc.jpg")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="directory"):
        load_image(tmp_path)


def test_decompression_bomb(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(p)  # 144 M pixels, tiny file
    with pytest.raises(InputError, match="decompression-bomb"):
        load_image(p)


def test_modes_are_converted(tmp_path, rgb):
    base = Image.fromarray(rgb)
    cmyk = base.convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=100)
    out = np.asarray(load_image(tmp_path / "cmyk.jpg"))
    assert out.shape == (40, 60, 3) and out[5, 5, 0] > 200 and out[5, 50, 2] > 200
    grey = load_image(base.convert("L"))
    assert grey.mode == "RGB"
    pal = load_image(base.convert("P"))
    assert np.abs(np.asarray(pal).astype(int) - rgb).max() < 10
    rgba = Image.fromarray(np.dstack([rgb, np.zeros((40, 60), np.uint8)]), "RGBA")
    assert np.asarray(load_image(rgba)).min() == 255  # fully transparent -> white background
    a16 = (np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16)
    Image.fromarray(a16, "I;16").save(tmp_path / "deep.png")
    im16 = np.asarray(load_image(tmp_path / "deep.png"))
    assert im16.shape == (40, 60, 3) and im16[0, 0, 0] == 0 and im16[-1, -1, 0] == 255


def test_exif_rotation(tmp_path, rgb):
    im = Image.fromarray(rgb)  # 60 wide, 40 high
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (40, 60)


def test_empty_text_and_truncation(hf_clip):
    with pytest.raises(InputError, match="empty text"):
        vx.explain(hf_clip, torch.zeros(3, 64, 64), "   ", method="m2ib")
    long = " ".join(["word"] * 100)
    with pytest.warns(UserWarning, match="its last 25 were dropped, from 'word"):
        tb = hf_clip.tokenize([long])
    assert tb.ids.shape[1] == 77 and tb.truncated[0].startswith("word")
    assert int(tb.ids[0, -1]) == 49407  # EOS kept at the end


def test_unknown_model_method_layer(hf_clip, tmp_path):
    with pytest.raises(ModelLoadError, match="accepted model specs"):
        vx.load_model("no-such-model")
    with pytest.raises(ModelLoadError, match="not in the local cache|neither in the local Hugging Face cache"):
        vx.load_model("hf:nobody/does-not-exist-xyz")
    with pytest.raises(MethodError, match="unknown method"):
        vx.explain(hf_clip, torch.zeros(3, 64, 64), "a cat", method="nope")
    with pytest.raises(MethodError, match="out of range"):
        vx.explain(hf_clip, torch.zeros(3, 64, 64), "a cat", method="m2ib", layer=99)
    with pytest.raises(InputError, match="2 images and 3 texts"):
        vx.explain(hf_clip, torch.zeros(2, 3, 64, 64), ["a", "b", "c"], method="m2ib")
    with pytest.raises(InputError, match="64x64"):
        vx.explain(hf_clip, torch.zeros(3, 32, 32), "a cat", method="m2ib")


def test_broadcasting(hf_clip):
    px = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    one_img_many_texts = vx.explain(hf_clip, px[0], ["a cat", "a dog", "a tree"], method="m2ib", steps=1)
    assert len(one_img_many_texts) == 3
    many_img_one_text = vx.explain(hf_clip, px, "a cat", method="m2ib", steps=1)
    assert len(many_img_one_text) == 2
    single = vx.explain(hf_clip, px[:1], "a cat", method="m2ib", steps=1)
    assert isinstance(single, vx.Explanation)


def test_in_memory_models_and_fallback_tokenizer(hf_clip, oc_clip, siglip):
    for m in (hf_clip, oc_clip, siglip):
        tb = m.tokenize(["a photo of a cat"])
        assert tb.shown_tokens(0) == ["a", "photo", "of", "a", "cat"]
    # SigLIP pools the last position of a context-length sequence and has no start token
    tb = siglip.tokenize(["a cat"])
    assert tb.ids.shape[1] == 16 and int(tb.pool_index[0]) == 15


def test_local_directory_loads(tmp_path):
    from tests.support.models import tiny_hf_clip

    raw = tiny_hf_clip()
    raw.save_pretrained(tmp_path / "clip")
    m = vx.load_model(str(tmp_path / "clip"))
    with torch.no_grad():
        a = m.encode_image(torch.ones(1, 3, 64, 64))
        b = raw.get_image_features(pixel_values=torch.ones(1, 3, 64, 64)).pooler_output
    torch.testing.assert_close(a, torch.nn.functional.normalize(b, dim=-1))
    with pytest.raises(ModelLoadError, match="config.json"):
        vx.load_model(str(tmp_path))


def test_open_clip_local_checkpoint(tmp_path):
    pytest.importorskip("open_clip")
    import open_clip

    raw, _, _ = open_clip.create_model_and_transforms("ViT-B-32")
    torch.save(raw.state_dict(), tmp_path / "ckpt.pt")
    m = vx.load_model(f"open_clip:ViT-B-32/{tmp_path / 'ckpt.pt'}")
    assert m.image.num_blocks == 12 and m.input_size == (224, 224)
    with pytest.raises(ModelLoadError, match="neither a local checkpoint"):
        vx.load_model("open_clip:ViT-B-32/not-a-tag")
    with pytest.raises(ModelLoadError, match="unknown OpenCLIP architecture"):
        vx.load_model("open_clip:ViT-Nope")


def test_encode_matches_model(hf_clip, siglip, oc_clip):
    """The adapters' block-by-block towers equal the models' own forward passes."""
    px = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for m in (hf_clip, siglip):
            tb = m.tokenize(["a photo of a cat", "dog"])
            raw = m.model
            ri = raw.get_image_features(pixel_values=px).pooler_output
            kw = {} if m.siglip else {"attention_mask": tb.attention_mask}
            rt = raw.get_text_features(input_ids=tb.ids, **kw).pooler_output
            torch.testing.assert_close(m.image.encode(px), ri, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(m.text.encode(tb), rt, rtol=1e-4, atol=1e-5)
            # the explicit-attention path (used by attention methods) agrees too
            torch.testing.assert_close(
                m.image.encode(px, need_attn=True, on_block=lambda i, h, a: None), ri, rtol=1e-4, atol=1e-5
            )
        import open_clip

        raw = oc_clip.model
        torch.testing.assert_close(oc_clip.image.encode(px), raw.encode_image(px), rtol=1e-4, atol=1e-5)
        tb = oc_clip.tokenize(["a photo of a cat", "dog"])
        torch.testing.assert_close(
            oc_clip.text.encode(tb),
            raw.encode_text(open_clip.tokenize(["a photo of a cat", "dog"])),
            rtol=1e-4,
            atol=1e-5,
        )


def test_pil_path_array_inputs_agree(hf_clip, tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "x.png")
    a = vx.explain(hf_clip, tmp_path / "x.png", "a cat", method="m2ib", steps=1)
    b = vx.explain(hf_clip, Image.fromarray(rgb), "a cat", method="m2ib", steps=1)
    c = vx.explain(hf_clip, rgb, "a cat", method="m2ib", steps=1)
    assert torch.equal(a.patch_map, b.patch_map) and torch.equal(b.patch_map, c.patch_map)
