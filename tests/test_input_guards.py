"""Inputs refused or cleaned before any work: images too large after preprocessing's resize, bad
devices, texts without a visible character or with control characters, over-long texts."""

from __future__ import annotations

import pytest
import torch


# --- images: the size after preprocessing's resize ----------------------------------------------
def _png(path, w, h):
    from PIL import Image

    Image.new("RGB", (w, h), (200, 30, 30)).save(path)
    return path


def test_thin_images_are_refused_before_resizing(tmp_path, hf_clip):
    from vlexplain.errors import InputError
    from vlexplain.images import MAX_RESIZED_PIXELS, check_image_size, load_image, resized_size

    assert resized_size((5000, 1), (224, 224)) == (1_120_000, 224)  # 250 M pixels: ~1 GB while resizing
    with pytest.raises(InputError, match=r"too elongated \(5000x1 pixels\).*crop it"):
        check_image_size((5000, 1), (224, 224))
    check_image_size((224 * 300, 224), (224, 224))  # 300:1 at 224 is within the limit
    assert 224 * 300 * 224 <= MAX_RESIZED_PIXELS
    for w, h in ((200_000, 1), (1, 200_000), (5000, 1)):
        im = load_image(_png(tmp_path / f"{w}x{h}.png", w, h))  # small on disk and decoded
        with pytest.raises(InputError, match="crop it"):
            hf_clip.preprocess(im)  # the tiny model resizes to 64: 5000x1 -> 320000x64, over the limit


def test_open_clip_preprocess_is_guarded_too(tmp_path):
    from open_clip.transform import image_transform

    from tests.support.models import tiny_open_clip
    from vlexplain.errors import InputError
    from vlexplain.images import load_image
    from vlexplain.models.open_clip import OpenCLIPDualEncoder

    m = OpenCLIPDualEncoder(tiny_open_clip(), preprocess=image_transform(64, is_train=False))
    with pytest.raises(InputError, match="too elongated"):
        m.preprocess(load_image(_png(tmp_path / "strip.png", 200_000, 1)))
    assert m.preprocess(load_image(_png(tmp_path / "ok.png", 80, 60))).shape == (3, 64, 64)


def test_very_thin_images_warn_that_most_is_cropped(hf_clip):
    from PIL import Image

    with pytest.warns(UserWarning, match=r"only its centre 16.7 %"):
        hf_clip.preprocess(Image.new("RGB", (600, 100)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hf_clip.preprocess(Image.new("RGB", (300, 200)))  # a 3:2 photo: no warning


def test_cli_refuses_a_thin_image_with_one_line_and_writes_nothing(tmp_path, capsys):
    from tests.support.models import tiny_hf_clip
    from vlexplain.cli import main

    tiny_hf_clip().save_pretrained(tmp_path / "model")
    capsys.readouterr()
    p = _png(tmp_path / "strip.png", 5000, 1)
    out = tmp_path / "out"
    rc = main(["explain", str(p), "-t", "a cat", "-m", str(tmp_path / "model"), "--method", "center", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "strip.png" in err and "crop" in err and "\n" not in err
    assert not out.exists()


def test_jsonl_error_names_the_right_column(tmp_path):
    from vlexplain.data.pairs import open_pairs
    from vlexplain.errors import InputError

    f = tmp_path / "pairs.jsonl"
    f.write_text('{"image": "a.png", "caption": "a cat"}\n{"image": "b.png", "caption": "a dog"\n')
    with pytest.raises(InputError, match=r"pairs.jsonl:2: invalid JSON \(Expecting ',' delimiter at column 38\)"):
        list(open_pairs(f).rows())


# --- devices ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "device,msg",
    [("nonsense", "not a device name"), ("gpu", "not a device name"), ("meta", "not meta"), ("cuda:99", "CUDA")],
)
def test_bad_devices_are_refused_before_loading(device, msg):
    import vlexplain as vx
    from vlexplain.errors import InputError

    with pytest.raises(InputError, match=msg):  # checked first: an unknown spec would be a ModelLoadError
        vx.load_model("no-such-model-spec", device=device)


# --- texts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["\x00", "\x00\x00\x00", "\x01\x02\n", " \u200b\ufeff ", "\t\r\n "])
def test_texts_without_a_visible_character_are_refused(hf_clip, text):
    import vlexplain as vx
    from vlexplain.errors import InputError

    with pytest.raises(InputError, match="visible character"):
        vx.explain(hf_clip, torch.zeros(3, 64, 64), text, method="center")
    with pytest.raises(InputError, match="visible character"):
        hf_clip.tokenize([text])


def test_control_characters_inside_a_text_are_removed_with_a_warning(hf_clip):
    import vlexplain as vx
    from vlexplain.textclean import clean_text

    with pytest.warns(UserWarning, match=r"removed control characters \(U\+0000, U\+007F\) from the text 'acat'"):
        e = vx.explain(hf_clip, torch.zeros(3, 64, 64), "a\x00ca\x7ft", method="center")
    assert e.text == "acat" and e.tokens == hf_clip.tokenize(["acat"]).shown_tokens(0)
    assert clean_text("a red\tcar\non the road") == "a red\tcar\non the road"  # whitespace stays, no warning
    assert clean_text("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600"


def test_over_length_warning_shows_first_words_and_token_count(hf_clip):
    text = "one two three four five six seven eight nine ten " * 20  # 200 words
    with pytest.warns(UserWarning) as rec:
        hf_clip.tokenize([text])
    msg = str(rec[0].message)
    assert "'one two three four five six seven eight \u2026' has 200 tokens" in msg and "its last 125" in msg
    assert len(msg) < 250  # not the whole dropped text


def test_explain_names_the_refused_image_file(tmp_path, hf_clip):
    import vlexplain as vx
    from vlexplain.errors import InputError

    p = _png(tmp_path / "strip.png", 5000, 1)
    with pytest.raises(InputError, match=r"image .*strip.png is too elongated"):
        vx.explain(hf_clip, p, "a cat", method="center")
