"""The explorer's Words & regions tab: its callbacks without a server, then in the browser."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.app.support import _open, _screenshot

gr = pytest.importorskip("gradio", reason="the web explorer needs the 'app' extra: pip install 'vlexplain[app]'")


def _rows(page_html: str) -> dict[str, float]:
    return {w: float(v) for w, v in re.findall(r"<tr><td>([^<]+)</td><td class='vx-score'>([^<]+)</td>", page_html)}


def test_callbacks_show_a_words_region_and_a_boxs_words():
    import vlexplain as vx
    from vlexplain.app.interactions_tab import WordsRegions, region_image
    from vlexplain.app.runner import ModelCache
    from vlexplain.errors import InputError
    from vlexplain.eval.benchmarks.interactions import shapes_items

    it = shapes_items(1)[0]
    cb = WordsRegions(ModelCache(), lambda p: p, lambda e: e)
    state, menu, first, full_words, status = cb.run(it.image, it.caption, "testbed:shapes", "span_first_order")
    inter = state["inter"]
    expected = vx.interactions(vx.load_model("testbed:shapes"), it.image, it.caption, method="span_first_order")
    torch.testing.assert_close(inter.matrix, expected.matrix)
    words = [w for w, _, _ in inter.word_maps()]
    assert menu.choices == [(w, w) for w in words] and set(it.spans) <= set(words) and "cosine" in status
    np.testing.assert_array_equal(first, region_image(inter, words[0]))
    H, W = inter.input_size
    whole = {w: float(inter.words((0, 0, W, H))[idx].sum()) for w, idx, _ in inter.word_maps()}
    assert _rows(full_words) == pytest.approx({w: round(v, 4) for w, v in whole.items()}, abs=1e-4)
    # a word's region, then a box drawn with two clicks (opposite corners, in either order)
    assert not np.array_equal(cb.pick_word(state, words[1]), first)
    state, img, note = cb.click(state, words[0], SimpleNamespace(index=[40, 30]))
    assert "opposite corner" in note and state["corner"] == (40, 30)
    state, img, box_words = cb.click(state, words[0], SimpleNamespace(index=[10, 5]))
    assert state["corner"] is None and "(10, 5)" in box_words
    box = {w: float(inter.words((10, 5, 41, 31))[idx].sum()) for w, idx, _ in inter.word_maps()}
    assert _rows(box_words) == pytest.approx({w: round(v, 4) for w, v in box.items()}, abs=1e-4)
    assert list(_rows(box_words)) == sorted(box, key=lambda w: -box[w])  # strongest first
    assert (img[5, 10:41] == 255).all()  # the box is drawn
    with pytest.raises(InputError, match="type a text"):
        cb.run(it.image, "  ", "testbed:shapes", "random")


@pytest.mark.slow
def test_browser_words_and_regions(server, browser, files, tmp_path):
    page = _open(browser, server)
    page.locator("#vx-tab-interactions-button").click()
    page.locator("#vx-ix-image input[type=file]").set_input_files(str(files["cat"]))
    page.locator("#vx-ix-text textarea").fill("a cat on a wooden floor")
    page.locator("#vx-ix-run").click()
    page.wait_for_function("document.querySelector('#vx-ix-status').innerText.includes('cosine')", timeout=300_000)
    labels = page.locator("#vx-ix-words label")
    assert [labels.nth(i).inner_text() for i in range(labels.count())] == ["cat", "wooden", "floor"]
    img = page.locator("#vx-ix-region img")
    src = img.get_attribute("src")
    page.locator("#vx-ix-words label").nth(2).click()  # "floor": another region
    page.wait_for_function(f"document.querySelector('#vx-ix-region img').src !== {src!r}", timeout=60_000)
    rows = page.locator("#vx-ix-box-words tbody tr")
    assert rows.count() == 3  # the words of the whole image
    box = img.bounding_box()
    src = img.get_attribute("src")
    page.mouse.click(box["x"] + 0.1 * box["width"], box["y"] + 0.1 * box["height"])
    page.get_by_text("Now click the opposite corner").wait_for(timeout=60_000)
    page.wait_for_function(f"document.querySelector('#vx-ix-region img').src !== {src!r}", timeout=60_000)
    img = page.locator("#vx-ix-region img")  # the map with the first corner drawn
    img.wait_for(timeout=60_000)
    box = img.bounding_box()
    page.mouse.click(box["x"] + 0.6 * box["width"], box["y"] + 0.9 * box["height"])
    try:
        page.get_by_text(re.compile(r"Words of the box \(\d+, \d+\)")).wait_for(timeout=60_000)
    finally:
        _screenshot(page, "VLEXPLAIN_IX_SCREENSHOT", tmp_path / "words_regions.png")
    shown = [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())]
    assert sorted(shown) == ["cat", "floor", "wooden"]
    page.close()
