"""End-to-end tests of ``vlexplain serve``: a real server process, a real headless browser.

The server runs the offline model in a subprocess on a free port. The browser test drives Debian's
chromium (``/usr/bin/chromium``) through Playwright; it skips only when that browser is absent.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web explorer needs the 'app' extra: pip install 'vlexplain[app]'")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MAX_UPLOAD_MB = 1
CHEAP_M2IB = "m2ib.steps=3\nm2ib.num_samples=2"
# second method for the browser run: the first of these that the registry offers for the image side
SECOND_METHOD_PREFERENCE = ("gradcam", "random", "saliency", "gradient_x_input", "center")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> int:
    import httpx

    return httpx.get(url, timeout=timeout).status_code


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``vlexplain serve --model offline`` on a free port; yields its URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "2", "NO_PROXY": "127.0.0.1,localhost"}
    cmd = [sys.executable, "-m", "vlexplain.cli", "serve", "--model", "offline", "--port", str(port),
           "--max-upload-mb", str(MAX_UPLOAD_MB), "--concurrency", "2"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if _get(url) == 200:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                pytest.fail(f"server did not start in time:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A photo, a text file, a text file named .png, a PNG over the upload limit, a pixel bomb."""
    import skimage.data

    d = tmp_path_factory.mktemp("uploads")
    cat = d / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    txt = d / "notes.txt"
    txt.write_text("these are notes, not an image\n")
    fake = d / "fake.png"
    fake.write_text("not a PNG either\n" * 10)
    big = d / "big.png"
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big)  # incompressible: ~1.9 MB
    assert big.stat().st_size > MAX_UPLOAD_MB * 1024 * 1024
    bomb = d / "bomb.png"
    Image.new("1", (10_000, 9_000)).save(bomb)  # a small file of 90 M pixels (Pillow's limit: 89.5 M)
    assert bomb.stat().st_size < MAX_UPLOAD_MB * 1024 * 1024
    return {"cat": cat, "txt": txt, "fake": fake, "big": big, "bomb": bomb}


@pytest.mark.slow
def test_server_binds_localhost_only_and_keeps_analytics_off(server):
    import httpx

    assert server.startswith("http://127.0.0.1:")

    cfg = httpx.get(server + "config", timeout=10).json()
    assert cfg.get("analytics_enabled") is False
    assert not cfg.get("share_url")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium); the browser test needs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#vx-run", timeout=60_000)
    return page


def _upload(page, path: Path) -> None:
    page.locator("#vx-image input[type=file]").set_input_files(str(path))


def _pick_methods(page) -> list[str]:
    """Check m2ib and one other registered method that explains images; uncheck the rest."""
    boxes = page.locator("#vx-methods input[type=checkbox]")
    labels = page.locator("#vx-methods label")
    names = [boxes.nth(i).get_attribute("name") for i in range(boxes.count())]
    label_text = {names[i]: labels.nth(i).inner_text() for i in range(len(names))}
    image_side = [n for n in names if "only)" not in label_text[n] or "image only" in label_text[n]]
    assert "m2ib" in image_side, f"m2ib missing from the method menu: {names}"
    second = next((m for m in SECOND_METHOD_PREFERENCE if m in image_side), None)
    second = second or next(m for m in image_side if m != "m2ib")
    chosen = ["m2ib", second]
    for i, n in enumerate(names):
        box = boxes.nth(i)
        if box.is_checked() != (n in chosen):
            box.click()
    return chosen


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
    natural = page.evaluate("() => { const i = document.querySelector('#vx-grid img'); return [i.naturalWidth, i.naturalHeight]; }")
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

    shot = Path(os.environ.get("VLEXPLAIN_SCREENSHOT", tmp_path / "explorer.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def _wait_toast(page, pattern: str) -> str:
    loc = page.get_by_text(re.compile(pattern, re.I)).first
    loc.wait_for(timeout=30_000)
    return loc.inner_text()


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
    page.wait_for_function("document.querySelector('#vx-status').innerText.includes('Cannot load model')", timeout=60_000)
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

    secrets = {"/etc/passwd": "root:", vlexplain.__file__: "import explain", str(Path.cwd() / "pyproject.toml"): "[project]"}
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
        return client.predict(handle_file(str(files["cat"])), text, "offline", ["m2ib"],
                              "m2ib.steps=1\nm2ib.num_samples=1", 0, api_name="/explain")

    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(one, texts))
    for text, (scores, grid, tokens, downloads, status) in zip(texts, outs):
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
    opts = parse_options("m2ib.steps=3\n# a comment\nm2ib.beta = 0.5\ngradcam.layer=None\nrise.x=1", ["m2ib", "gradcam"])
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
