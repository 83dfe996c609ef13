"""End-to-end tests of ``vlexplain serve`` (the Explain tab): a real server process, a real browser."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.app.support import (
    CHEAP_M2IB,
    _get,
    _open,
    _pick_methods,
    _screenshot,
    _upload,
    _wait_toast,
)

pytest.importorskip("gradio", reason="the web explorer needs the 'app' extra: pip install 'vlexplain[app]'")


@pytest.mark.slow
def test_server_binds_localhost_only_and_keeps_analytics_off(server):
    import httpx

    assert server.startswith("http://127.0.0.1:")

    cfg = httpx.get(server + "config", timeout=10).json()
    assert cfg.get("analytics_enabled") is False
    assert not cfg.get("share_url")


@pytest.mark.slow
def test_browser_end_to_end(server, browser, files, tmp_path):
    page = _open(browser, server)
    _upload(page, files["cat"])
    page.wait_for_function("document.querySelector('#vx-status').innerText.includes('Image ready')", timeout=60_000)
    assert "451 × 300" in page.locator("#vx-status").inner_text()
    texts = ["a cat", "a cup of coffee"]
    page.locator("#vx-texts textarea").fill("\n".join(texts))
    methods = _pick_methods(page)
    page.get_by_text("Method options and seed").click()
    page.locator("#vx-options textarea").fill(CHEAP_M2IB)
    page.locator("#vx-run").click()
    page.wait_for_function("document.querySelector('#vx-status').innerText.includes('Done')", timeout=300_000)

    # scores: one row per text, cosine similarities in [-1, 1]
    rows = page.locator("#vx-scores table tbody tr")
    assert rows.count() == 2
    shown = {}
    for i in range(2):
        cells = rows.nth(i).locator("td")
        shown[cells.nth(1).inner_text()] = float(cells.nth(2).inner_text())
    assert set(shown) == set(texts)
    assert all(-1.0 <= s <= 1.0 for s in shown.values())
    # the offline model recognises the cat photo
    assert shown["a cat"] > shown["a cup of coffee"]

    # the heatmap grid is an image that actually loaded, wide enough for 1 + 2 columns
    img = page.locator("#vx-grid img")
    img.wait_for(timeout=30_000)
    natural = page.evaluate(
        "() => { const i = document.querySelector('#vx-grid img'); return [i.naturalWidth, i.naturalHeight]; }"
    )
    assert natural[0] > 500 and natural[1] > 300

    # token highlights: one row per text, tokens present and coloured
    tok = page.locator("#vx-tokens")
    assert tok.locator("table tbody tr").count() == 2
    assert "cat" in tok.inner_text() and "coffee" in tok.inner_text()
    assert tok.locator("span[title]").count() >= 4

    # downloads: the PNG grid and the JSON results, consistent with the page
    links = page.locator("#vx-download a[href]")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert any(h.endswith("/vlexplain_grid.png") for h in hrefs), hrefs
    json_href = next(h for h in hrefs if h.endswith("/vlexplain_results.json"))
    import httpx

    data = httpx.get(json_href if json_href.startswith("http") else server.rstrip("/") + json_href, timeout=10).json()
    assert data["texts"] == texts and data["methods"] == methods and data["model"]
    assert len(data["explanations"]) == 4
    for text, score in data["scores"].items():
        assert round(score, 4) == pytest.approx(shown[text], abs=1e-4)
    for e in data["explanations"]:
        assert e["method"] in methods and e["seconds"] >= 0
    m2 = [e for e in data["explanations"] if e["method"] == "m2ib"]
    assert all(e["settings"]["steps"] == 3 and e["settings"]["num_samples"] == 2 for e in m2)

    _screenshot(page, "VLEXPLAIN_SCREENSHOT", tmp_path / "explorer.png")
    page.close()


@pytest.mark.slow
def test_bad_inputs_get_clear_messages_and_server_keeps_serving(server, browser, files):
    page = _open(browser, server)
    _upload(page, files["txt"])
    assert "notes.txt" in _wait_toast(page, r"invalid file type")
    _upload(page, files["fake"])
    assert "not an image" in _wait_toast(page, r"not an image")
    _upload(page, files["big"])
    assert "big.png" in _wait_toast(page, r"exceed.*maximum allowed size")
    # the same page still works
    _upload(page, files["cat"])
    page.wait_for_function("document.querySelector('#vx-status').innerText.includes('Image ready')", timeout=60_000)
    # a model spec that cannot load: a clear message, and the method menu stays usable
    n_methods = page.locator("#vx-methods input[type=checkbox]").count()
    model = page.locator("#vx-model input")
    model.fill("no-such-model")
    model.press("Enter")
    page.wait_for_function(
        "document.querySelector('#vx-status').innerText.includes('Cannot load model')", timeout=60_000
    )
    assert "unknown model 'no-such-model'" in page.locator("#vx-status").inner_text()
    assert page.locator("#vx-methods input[type=checkbox]").count() == n_methods
    model.fill("offline")
    model.press("Enter")
    page.wait_for_function("document.querySelector('#vx-status').innerText.includes('ready')", timeout=60_000)
    # a built-in photo replaces the image and suggests texts
    page.locator("#vx-sample input").click()
    page.get_by_role("option", name="rocket (scikit-image)").click()
    page.wait_for_function("document.querySelector('#vx-status').innerText.includes('built-in image')", timeout=30_000)
    assert page.locator("#vx-texts textarea").input_value().splitlines()[0] == "a rocket launch"
    page.close()


@pytest.mark.slow
def test_oversized_upload_is_refused_by_the_server(server, files):
    import httpx

    with open(files["big"], "rb") as fh:
        r = httpx.post(server + "gradio_api/upload", files={"files": ("big.png", fh, "image/png")}, timeout=30)
    assert r.status_code == 413
    assert _get(server) == 200


@pytest.mark.slow
def test_serves_no_file_from_disk(server):
    import httpx

    import vlexplain

    secrets = {
        "/etc/passwd": "root:",
        vlexplain.__file__: "import explain",
        str(Path.cwd() / "pyproject.toml"): "[project]",
    }
    for path, content in secrets.items():
        r = httpx.get(server + "gradio_api/file=" + path, timeout=10)
        assert r.status_code in (403, 404), (path, r.status_code)
        assert content not in r.text


@pytest.mark.slow
def test_concurrent_requests_all_complete(server, files):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    texts = ["a cat", "a rocket", "a cup of coffee"]

    def one(text: str):
        return client.predict(
            handle_file(str(files["cat"])),
            text,
            "offline",
            ["m2ib"],
            "m2ib.steps=1\nm2ib.num_samples=1",
            0,
            api_name="/explain",
        )

    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(one, texts))
    for text, (scores, _grid, _tokens, downloads, status) in zip(texts, outs):
        assert status.startswith("Done") and text in scores
        js = next(Path(d) for d in downloads if str(d).endswith(".json"))
        data = json.loads(js.read_text())
        assert data["texts"] == [text] and len(data["explanations"]) == 1
    assert _get(server) == 200


@pytest.mark.slow
def test_bad_requests_get_clear_messages(server, files):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    cat = handle_file(str(files["cat"]))
    cases = [
        ((cat, "  \n ", "offline", ["m2ib"], "", 0), "at least one text"),
        ((cat, "a cat", "offline", [], "", 0), "at least one method"),
        ((cat, "a cat", "no-such-model", ["m2ib"], "", 0), "unknown model"),
        ((cat, "a cat", "offline", ["m2ib"], "m2ib.no_such_option=1", 0), "no_such_option"),
        ((cat, "a cat", "offline", ["m2ib"], "steps 3", 0), "method.option=value"),
        ((handle_file(str(files["fake"])), "a cat", "offline", ["m2ib"], "", 0), "not an image"),
        ((handle_file(str(files["bomb"])), "a cat", "offline", ["m2ib"], "", 0), "too many pixels"),
        ((cat, "a cat", "offline", ["m2ib"], "", "abc"), "whole number"),
    ]
    for args, message in cases:
        with pytest.raises(Exception, match=re.escape(message)):
            client.predict(*args, api_name="/explain")
    assert _get(server) == 200


# --- the explorer's helpers, without a server ------------------------------------------------------


def test_parse_texts_and_options():
    from vlexplain.app.runner import MAX_TEXTS, parse_options, parse_texts
    from vlexplain.errors import InputError

    assert parse_texts(" a cat \n\n a dog\n") == ["a cat", "a dog"]
    with pytest.raises(InputError, match="at least one text"):
        parse_texts(" \n ")
    with pytest.raises(InputError, match=f"at most {MAX_TEXTS}"):
        parse_texts("\n".join(f"t{i}" for i in range(MAX_TEXTS + 1)))
    opts = parse_options(
        "m2ib.steps=3\n# a comment\nm2ib.beta = 0.5\ngradcam.layer=None\nrise.x=1", ["m2ib", "gradcam"]
    )
    assert opts == {"m2ib": {"steps": 3, "beta": 0.5}, "gradcam": {"layer": None}}
    assert parse_options("m2ib.name=hello", ["m2ib"]) == {"m2ib": {"name": "hello"}}
    with pytest.raises(InputError, match="method.option=value"):
        parse_options("steps=3", ["m2ib"])


def test_model_cache_loads_each_spec_once_across_threads():
    from vlexplain.app.runner import ModelCache

    calls = []

    def loader(spec):
        calls.append(spec)
        time.sleep(0.05)
        return object()

    cache = ModelCache(loader)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: cache.get(" offline "), range(4)))
    assert calls == ["offline"]
    assert all(g is got[0] for g in got) and "offline" in cache
    cache.get("other")
    assert calls == ["offline", "other"]


def test_samples_load_as_rgb_images_with_texts():
    from vlexplain.app.samples import sample_images

    samples = sample_images()
    assert any("chelsea" in k for k in samples)
    for label, load in samples.items():
        image, texts = load()
        assert image.mode == "RGB" and min(image.size) >= 64, label
        assert [t for t in texts.splitlines() if t.strip()], label
