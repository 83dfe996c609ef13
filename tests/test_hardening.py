"""Hardening: pointing-game ties, the image-size guard, text cleaning, file modes, the explorer's
model cache, run identities of ``evaluate``."""

from __future__ import annotations

import math

import pytest
import torch

from vlexplain.concepts.metrics import part_pointing
from vlexplain.metrics.localization import dilate, pointing_game, tied_max_share


# --- pointing game: ties ------------------------------------------------------------------------
def test_pointing_game_ties_hand_computed():
    """A 2x2 plateau of maxima; the mask pixel sits at (0, 3)."""
    m = torch.zeros(1, 4, 4)
    m[0, :2, :2] = 1.0  # tied maxima at (0,0) (0,1) (1,0) (1,1)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 3] = True
    # distances to (0,3): (0,0) 3, (0,1) 2, (1,0) sqrt(10)=3.16, (1,1) sqrt(5)=2.24
    assert pointing_game(m, mask, tolerance=1).item() == 0.0
    assert pointing_game(m, mask, tolerance=2).item() == pytest.approx(1 / 4)  # (0,1) only
    assert pointing_game(m, mask, tolerance=3).item() == pytest.approx(3 / 4)  # (1,0) is 3.16 away
    assert pointing_game(m, mask, tolerance=4).item() == 1.0
    # the same scores for the mirrored map and mask: no bias towards the top-left
    for tol in (1, 2, 3, 4):
        assert pointing_game(m.flip(-1), mask.flip(-1), tol).item() == pointing_game(m, mask, tol).item()
        assert pointing_game(m.flip(-2), mask.flip(-2), tol).item() == pointing_game(m, mask, tol).item()


def test_pointing_game_constant_map_scores_the_covered_share():
    """A constant map does not always hit: its score is the share of pixels within the tolerance."""
    m = torch.full((1, 10, 10), 0.3)
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 4:6, 4:6] = True
    assert pointing_game(m, mask, tolerance=0).item() == pytest.approx(4 / 100)
    # tolerance 1: the 2x2 block plus its 8 edge neighbours (diagonals are sqrt(2) away)
    assert pointing_game(m, mask, tolerance=1).item() == pytest.approx(12 / 100)
    assert math.isnan(pointing_game(m, torch.zeros_like(mask), 3).item())


def test_pointing_game_unique_maximum_unchanged_and_batched():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(8, 20, 20, generator=g)
    maps[:4, 5:8, 5:8] = 2.0  # four maps with a 3x3 plateau of maxima
    masks = torch.zeros(8, 20, 20, dtype=torch.bool)
    masks[:, 6:12, 3:7] = True
    got = pointing_game(maps, masks, tolerance=1)
    for i in range(8):  # one by one, by enumeration of the maxima
        top = (maps[i] == maps[i].max()).nonzero().tolist()
        ys, xs = masks[i].nonzero().T
        hits = [float(((ys - y) ** 2 + (xs - x) ** 2 <= 1).any()) for y, x in top]
        assert got[i].item() == pytest.approx(sum(hits) / len(hits))
        assert pointing_game(maps[i : i + 1], masks[i : i + 1], 1).item() == got[i].item()
    # rows 6..11, cols 3..6 dilated by 1 cover rows 5..12 x cols 2..7 minus corners; the plateau
    # (rows 5..7, cols 5..7): row 5 has cols 5, 6 (col 7 is a corner), rows 6, 7 all three -> 8 / 9
    assert got[0].item() == pytest.approx(8 / 9)


def test_dilate_equals_disk_convolution():
    import torch.nn.functional as F

    from vlexplain.metrics.localization import disk

    g = torch.Generator().manual_seed(0)
    m = torch.rand(5, 41, 33, generator=g) > 0.99
    for r in (0, 1, 2, 5, 15, 50):
        ref = m if r == 0 else F.conv2d(m[:, None].float(), disk(r).float()[None, None], padding=r)[:, 0] > 0.5
        assert torch.equal(dilate(m, r), ref)


def test_part_pointing_ties():
    maps = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])  # three tied maxima
    part = torch.tensor([[[True, False], [False, False]]])
    assert part_pointing(maps, part).tolist() == [pytest.approx(1 / 3)]
    assert part_pointing(maps, ~part).tolist() == [pytest.approx(2 / 3)]
    assert tied_max_share(torch.tensor([[[float("nan"), 1.0]]]), torch.tensor([[[False, True]]])).item() == 1.0


# --- files respect the umask; long texts wrap --------------------------------------------------
def _explanation(words: list[str]):
    from vlexplain.attribution.base import Explanation

    g = torch.Generator().manual_seed(0)
    return Explanation(image_map=torch.rand(32, 32, generator=g), patch_map=torch.rand(2, 2, generator=g),
                       token_scores=torch.rand(len(words), generator=g), tokens=words, score=0.25, method="m2ib",
                       settings={}, text=" ".join(words), pixels=torch.rand(3, 32, 32, generator=g))


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_respect_the_umask(tmp_path, umask):
    import os

    from vlexplain.eval import io as rio
    from vlexplain.viz.gallery import write_gallery
    from vlexplain.viz.save import save_explanation

    old = os.umask(umask)
    try:
        written = save_explanation(_explanation(["a", "cat"]), tmp_path / "x")
        written.append(str(write_gallery(tmp_path, [], "t", "s")))
        written.append(str(rio.atomic_write_text(tmp_path / "run" / "a.txt", "hi")))
        assert rio.current_umask() == umask
    finally:
        os.umask(old)
    for p in written:
        assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask, p


def test_token_png_and_title_wrap_long_texts(tmp_path):
    from PIL import Image

    from vlexplain.viz.save import _token_lines, save_explanation, wrap_title

    assert _token_lines([1.0, 1.0, 1.0, 5.0, 1.0], room=3.0, gap=0.5) == [[0, 1], [2], [3], [4]]
    short = save_explanation(_explanation(["a", "cat"]), tmp_path / "s")
    words = ("a small brown dog runs across the green field near the old house " * 4).split()
    long = save_explanation(_explanation(words), tmp_path / "l")
    (ws, hs), (wl, hl) = (Image.open(p[2]).size for p in (short, long))
    assert wl <= 12 * 110 and hs == 99 and hl >= int((3 * 0.42 + 0.24) * 110)  # >= 3 lines, not clipped
    title = wrap_title(" ".join(words))
    assert all(len(line) <= 70 for line in title.splitlines()) and 2 < len(title.splitlines()) <= 6
    assert Image.open(long[0]).size[1] > Image.open(short[0]).size[1]  # the overlay grows for its title


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

    from conftest import tiny_open_clip
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
    from vlexplain.cli import main

    p = _png(tmp_path / "strip.png", 5000, 1)
    out = tmp_path / "out"
    rc = main(["explain", str(p), "-t", "a cat", "-m", "offline", "--method", "center", "-o", str(out)])
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
@pytest.mark.parametrize("device,msg", [("nonsense", "not a device name"), ("gpu", "not a device name"),
                                        ("meta", "not meta"), ("cuda:99", "CUDA")])
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
