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
    return Explanation(
        image_map=torch.rand(32, 32, generator=g),
        patch_map=torch.rand(2, 2, generator=g),
        token_scores=torch.rand(len(words), generator=g),
        tokens=words,
        score=0.25,
        method="m2ib",
        settings={},
        text=" ".join(words),
        pixels=torch.rand(3, 32, 32, generator=g),
    )


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
    from conftest import tiny_open_clip
    from open_clip.transform import image_transform

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
    from conftest import tiny_hf_clip

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


# --- the web explorer: bounded model cache, allow-list, one-line logs -------------------------------
class _Model:
    def __init__(self, spec):
        self.spec = spec


def test_model_cache_keeps_the_most_recently_used_few():
    import gc
    import weakref

    from vlexplain.app.runner import ModelCache

    calls = []

    def loader(spec):
        calls.append(spec)
        return _Model(spec)

    cache = ModelCache(loader)  # default: 2 models
    a = weakref.ref(cache.get("a")[0])
    cache.get("b")
    cache.get("a")  # a is now the most recent
    cache.get("c")  # drops b, the least recently used
    assert cache.loaded() == ["a", "c"] and "b" not in cache and calls == ["a", "b", "c"]
    cache.get("b")  # loaded again; drops a
    assert cache.loaded() == ["c", "b"] and calls == ["a", "b", "c", "b"]
    gc.collect()
    assert a() is None  # nothing else holds a dropped model: its memory is freed
    one = ModelCache(loader, max_models=1)
    for s in "xyzxy":
        one.get(s)
    assert one.loaded() == ["y"]


def test_model_cache_allow_list_refuses_other_specs():
    from vlexplain.app.runner import ModelCache
    from vlexplain.errors import InputError

    cache = ModelCache(_Model, allowed=["offline", "testbed:shapes"])
    assert cache.get(" offline ")[0].spec == "offline"
    for spec in ("open_clip:ViT-L-14/laion2b", "/etc", "hf:org/name", ""):
        with pytest.raises(InputError, match="choose one of: offline, testbed:shapes|no model given"):
            cache.get(spec)
    assert cache.loaded() == ["offline"]
    with pytest.raises(InputError):
        ModelCache(_Model, max_models=0)


@pytest.mark.parametrize(
    "host,models,expected",
    [
        ("127.0.0.1", None, None),
        ("localhost", None, None),
        ("::1", None, None),
        ("0.0.0.0", None, ["m0"]),
        ("192.168.1.5", None, ["m0"]),
        ("0.0.0.0", ["m0", "m1"], ["m0", "m1"]),
    ],
)
def test_launch_restricts_models_unless_bound_to_loopback(monkeypatch, host, models, expected):
    import vlexplain.app.app as appmod

    seen = {}

    class Demo:
        def queue(self, **kw):
            pass

    def fake_build(model, max_upload_mb, cache):
        seen["cache"] = cache
        return Demo()

    monkeypatch.setattr(appmod, "build_app", fake_build)
    monkeypatch.setattr(appmod, "_serve", lambda *a: None)
    appmod.launch(model="m0", host=host, models=models, max_models=3)
    assert seen["cache"].allowed == expected and seen["cache"].max_models == 3


def test_launch_port_in_use_is_a_one_line_error(monkeypatch):
    import vlexplain.app.app as appmod
    from vlexplain.errors import InputError

    class Demo:
        def queue(self, **kw):
            pass

    def busy(*a):
        raise OSError("Cannot find empty port in range: 7860-7860")

    monkeypatch.setattr(appmod, "build_app", lambda *a: Demo())
    monkeypatch.setattr(appmod, "_serve", busy)
    with pytest.raises(InputError, match="cannot serve on 127.0.0.1:7860: Cannot find empty port"):
        appmod.launch(model="m0")


def test_user_errors_are_logged_in_one_line_without_traceback(caplog):
    pytest.importorskip("gradio")
    from vlexplain.app.app import Explorer
    from vlexplain.app.runner import ModelCache

    ex = Explorer(ModelCache(lambda spec: pytest.fail("no model is needed here")))
    with caplog.at_level("WARNING", logger="vlexplain.app"):
        with pytest.raises(Exception) as err:
            ex.explain(None, "a cat", "offline", ["center"], "", 0)
    assert err.value.print_exception is False  # gradio prints no traceback for it
    msgs = [r.getMessage() for r in caplog.records if r.name == "vlexplain.app"]
    assert msgs == ["request refused: upload an image or pick a built-in photo first"]


# --- evaluate: the run identity includes the data's content -------------------------------------
def _pairs(d, captions):
    import json

    from PIL import Image

    (d / "img").mkdir(exist_ok=True)
    for i in range(len(captions)):
        if not (d / "img" / f"{i}.png").exists():
            Image.new("RGB", (40, 30), (40 * i, 90, 160)).save(d / "img" / f"{i}.png")
    f = d / "pairs.jsonl"
    f.write_text("".join(json.dumps({"image": f"img/{i}.png", "caption": c}) + "\n" for i, c in enumerate(captions)))
    return f


def test_resume_refuses_changed_data_and_says_what_changed(tmp_path, hf_clip):
    import os

    from vlexplain.errors import InputError
    from vlexplain.eval.runner import evaluate

    caps = ["a red square", "a blue sky", "a green field", "a cat"]
    data = _pairs(tmp_path, caps)
    out = tmp_path / "run"
    kw = dict(batch_size=2, shard_size=2, metric_options={"deletion_image": {"n_steps": 2}}, progress=False)
    evaluate(data, hf_clip, ["random"], ["deletion_image"], out, **kw)
    evaluate(data, hf_clip, ["random"], ["deletion_image"], out, resume=True, **kw)  # unchanged: resumes
    # the same number of rows, one caption edited: the first shard's rows and the file changed
    _pairs(tmp_path, ["a red circle"] + caps[1:])
    with pytest.raises(
        InputError,
        match=r"the data file pairs.jsonl changed; the rows \(captions, image paths, "
        r"boxes\) of samples 0-1 changed; pass --overwrite to replace the run",
    ):
        evaluate(data, hf_clip, ["random"], ["deletion_image"], out, resume=True, **kw)
    # captions restored, an image of the second shard rewritten (size or mtime)
    _pairs(tmp_path, caps)
    from PIL import Image

    Image.new("RGB", (41, 30)).save(tmp_path / "img" / "3.png")
    os.utime(tmp_path / "img" / "3.png", ns=(1, 1))
    with pytest.raises(InputError, match=r"the image files \(size or modification time\) of samples 2-3 changed"):
        evaluate(data, hf_clip, ["random"], ["deletion_image"], out, resume=True, **kw)


def test_resume_of_a_run_without_a_data_fingerprint_is_refused(tmp_path, hf_clip):
    import json

    from vlexplain.errors import InputError
    from vlexplain.eval.runner import evaluate

    data = _pairs(tmp_path, ["a", "b"])
    out = tmp_path / "run"
    kw = dict(batch_size=2, shard_size=2, metric_options={"deletion_image": {"n_steps": 2}}, progress=False)
    evaluate(data, hf_clip, ["random"], ["deletion_image"], out, **kw)
    cfg = json.loads((out / "config.json").read_text())
    assert set(cfg["data_identity"]) == {"files", "rows", "images"} and len(cfg["data_identity"]["rows"]) == 1
    del cfg["data_identity"]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="records no fingerprint of its data"):
        evaluate(data, hf_clip, ["random"], ["deletion_image"], out, resume=True, **kw)


# --- --out: existing files, unwritable places, one run at a time -----------------------------------
def test_out_checks_and_folder_claim(tmp_path):
    from vlexplain.errors import InputError
    from vlexplain.outdir import check_out_dir, check_out_file, claim

    f = tmp_path / "a.txt"
    f.write_text("x")
    with pytest.raises(InputError, match="is an existing file; give a folder"):
        check_out_dir(f)
    with pytest.raises(InputError, match="a.txt is a file, not a folder"):
        check_out_dir(f / "sub" / "deeper")
    with pytest.raises(InputError, match="is a folder; give a file name"):
        check_out_file(tmp_path)
    with pytest.raises(InputError, match="cannot write in /proc"):
        check_out_dir("/proc/vlexplain-out")
    assert check_out_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()  # checked, not created
    c = claim(tmp_path / "run")
    with pytest.raises(InputError, match=r"being written by another vlexplain run \(process \d+\)"):
        claim(tmp_path / "run")
    c.release()
    claim(tmp_path / "run").release()  # free again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no lock file left


def test_explain_names_the_refused_image_file(tmp_path, hf_clip):
    import vlexplain as vx
    from vlexplain.errors import InputError

    p = _png(tmp_path / "strip.png", 5000, 1)
    with pytest.raises(InputError, match=r"image .*strip.png is too elongated"):
        vx.explain(hf_clip, p, "a cat", method="center")
