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
SERVER_THREADS = 2
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
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": str(SERVER_THREADS),
           "NO_PROXY": "127.0.0.1,localhost"}
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


# --- the Concepts tab -------------------------------------------------------------------------------

CAT_CONCEPTS = ["pointed ears", "long white whiskers", "striped fur"]


def _direct_concepts(model, image, cls, descriptors, templates=None) -> dict:
    """This image's DEAL maps and metrics straight from vlexplain.concepts (what the tab must show)."""
    from vlexplain.concepts import ConceptSet, Templates, deal_maps
    from vlexplain.concepts.metrics import disentanglability, localizability

    templates = templates or Templates()
    px = model.preprocess(image)[None]
    cm = deal_maps(model, px, [cls], ConceptSet({cls: tuple(descriptors)}), templates=templates)
    dis, overlap = disentanglability(cm.concepts, cm.mask)
    prompts = [templates.concept_prompt(cls, d) for d in descriptors]
    loc, per = localizability(model, px.expand(len(descriptors), -1, -1, -1), cm.concepts[0], prompts)
    return {"disentanglability": dis, "mean_pairwise_overlap": overlap, "localizability": loc,
            "per": [float(x) for x in per], "scores": [float(s) for s in cm.scores[0]],
            "prompts": [templates.category_prompt(cls)] + prompts, "px": px, "concepts": cm.concepts[0].float(),
            "category": cm.category[0].float()}


def _open_concepts(browser, url):
    page = _open(browser, url)
    page.get_by_role("tab", name="Concepts").click()
    page.wait_for_selector("#vx-c-run", timeout=30_000)
    return page


def _metric(page, key: str) -> float:
    return float(page.locator(f"#vx-c-metrics td[data-key='{key}']").inner_text())


@pytest.mark.slow
def test_browser_concepts_tab(server, browser, files, tmp_path):
    import vlexplain as vx
    from vlexplain.images import load_image

    page = _open_concepts(browser, server)
    page.locator("#vx-c-image input[type=file]").set_input_files(str(files["cat"]))
    page.wait_for_function("document.querySelector('#vx-c-status').innerText.includes('Image ready')", timeout=60_000)
    page.locator("#vx-c-class input").fill("cat")
    page.locator("#vx-c-descriptors textarea").fill("\n".join(CAT_CONCEPTS))
    page.locator("#vx-c-run").click()
    page.wait_for_function("document.querySelector('#vx-c-status').innerText.includes('Done')", timeout=300_000)
    assert "3 concept(s) by deal" in page.locator("#vx-c-status").inner_text()

    # the figure: the image, the category map and three concept maps side by side
    page.locator("#vx-c-figure img").wait_for(timeout=30_000)
    w, h = page.evaluate("() => { const i = document.querySelector('#vx-c-figure img'); return [i.naturalWidth, i.naturalHeight]; }")
    assert w > 700 and h > 550  # two rows of three panels

    # the numbers on the page are those of vlexplain.concepts for the same image and prompts, computed
    # with the server's thread count (float noise can reorder near-tied pixels of the insertion test,
    # so localizability gets a looser tolerance)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(SERVER_THREADS)
    try:
        want = _direct_concepts(vx.load_model("offline"), load_image(files["cat"]), "cat", CAT_CONCEPTS)
    finally:
        torch.set_num_threads(threads)
    for key, tol in (("disentanglability", 2e-4), ("mean_pairwise_overlap", 2e-4), ("localizability", 5e-3)):
        assert _metric(page, key) == pytest.approx(want[key], abs=tol), key
    assert _metric(page, "score:category") == pytest.approx(want["scores"][0], abs=2e-4)
    for j in range(3):
        assert _metric(page, f"score:{j + 1}") == pytest.approx(want["scores"][1 + j], abs=2e-4)
        assert _metric(page, f"localizability:{j + 1}") == pytest.approx(want["per"][j], abs=5e-3)
    shown = page.locator("#vx-c-metrics").inner_text()
    assert all(p in shown for p in want["prompts"]), shown  # "a photo of a cat.", "cat, which has ..."

    links = page.locator("#vx-c-download a[href]")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert any(h.endswith("/vlexplain_concepts.png") for h in hrefs), hrefs
    js = next(h for h in hrefs if h.endswith("/vlexplain_concepts.json"))
    import httpx

    data = httpx.get(js if js.startswith("http") else server.rstrip("/") + js, timeout=10).json()
    assert data["class"] == "cat" and data["descriptors"] == CAT_CONCEPTS and data["method"] == "deal"
    assert data["disentanglability"] == pytest.approx(want["disentanglability"], abs=2e-4)
    assert len(data["concept_maps"]) == 3

    shot = Path(os.environ.get("VLEXPLAIN_CONCEPTS_SCREENSHOT", tmp_path / "explorer_concepts.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


@pytest.mark.slow
def test_browser_concept_sets_and_bad_inputs(server, browser, tmp_path):
    from vlexplain.data.shapes import concept_set

    page = _open_concepts(browser, server)
    # the built-in shapes world: picking a class fills its descriptors and the shapes prompts
    page.locator("#vx-c-pick input").click()
    page.get_by_role("option", name="house", exact=True).click()
    page.wait_for_function("document.querySelector('#vx-c-status').innerText.includes('descriptors from')", timeout=30_000)
    assert page.locator("#vx-c-class input").input_value() == "house"
    assert page.locator("#vx-c-descriptors textarea").input_value().splitlines() == concept_set()["house"]
    page.get_by_text("Prompt templates and method options").click()
    assert page.locator("#vx-c-category-template input").input_value() == "a {class}"
    assert page.locator("#vx-c-concept-template input").input_value() == "{descriptor}"

    # an uploaded concept file: its classes replace the menu; picking one fills the boxes
    good = tmp_path / "pets.json"
    good.write_text(json.dumps({"dog": ["floppy ears", "a wet nose"], "cat": CAT_CONCEPTS}))
    page.locator("#vx-c-file input[type=file]").set_input_files(str(good))
    page.wait_for_function("document.querySelector('#vx-c-status').innerText.includes('Read 2 classes')", timeout=30_000)
    page.locator("#vx-c-pick input").click()
    page.get_by_role("option", name="dog", exact=True).click()
    page.wait_for_function("document.querySelector('#vx-c-status').innerText.includes(\"'dog': 2 descriptors\")", timeout=30_000)
    assert page.locator("#vx-c-descriptors textarea").input_value().splitlines() == ["floppy ears", "a wet nose"]
    assert page.locator("#vx-c-category-template input").input_value() == "a photo of a {class}."

    # bad files and bad fields: a clear message each, and the page keeps working
    bad = tmp_path / "broken.json"
    bad.write_text('{"dog": ["floppy ears", ')
    page.locator("#vx-c-file input[type=file]").set_input_files(str(bad))
    assert "broken.json is not valid JSON" in _wait_toast(page, r"broken\.json is not valid JSON")
    assert "/tmp" not in _wait_toast(page, r"broken\.json is not valid JSON")  # the server path stays hidden
    page.locator("#vx-c-class input").fill("  ")
    page.locator("#vx-c-run").click()
    _wait_toast(page, r"type a class name")
    page.locator("#vx-c-class input").fill("dog")
    page.locator("#vx-c-descriptors textarea").fill("\n".join(f"part {i}" for i in range(12)))
    page.locator("#vx-c-run").click()
    _wait_toast(page, r"at most 8 descriptors per run, got 12")
    page.close()
    assert _get(server) == 200


@pytest.mark.slow
def test_concepts_api_bad_requests_get_clear_messages(server, files):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    cat = handle_file(str(files["cat"]))
    ok = ("offline", "deal", "cat", "pointed ears\nwhiskers", "", "", "")
    cases = [
        ((cat, "offline", "deal", "", "ears", "", "", ""), "type a class name"),
        ((cat, "offline", "deal", "cat", " \n ", "", "", ""), "at least one descriptor"),
        ((cat, "offline", "deal", "cat", "\n".join(f"d{i}" for i in range(9)), "", "", ""), "at most 8 descriptors"),
        ((cat, "offline", "deal", "cat", "ears\nEars.", "", "", ""), "duplicate descriptors"),
        ((cat, "offline", "chefer", "cat", "ears\nnose", "", "", ""), "'chefer' gives no image maps on offline"),
        ((cat, "offline", "deal", "cat", "ears\nnose", "deal.steps=3", "", ""), "unknown option(s) for deal"),
        ((cat, "offline", "deal", "cat", "ears\nnose", "", "a {klass}", ""), "bad prompt template"),
        ((cat, "offline", "deal", "cat", "ears\nnose", "", "", "{class} only"), "must contain {descriptor}"),
        ((cat, "offline", "deal", "cat", "ears\n" + "very " * 80 + "long", "", "", ""), "longer than 12 words"),
        ((handle_file(str(files["fake"])), *ok), "not an image"),
        ((cat, "no-such-model", *ok[1:]), "unknown model"),
    ]
    for args, message in cases:
        with pytest.raises(Exception, match=re.escape(message)):
            client.predict(*args, api_name="/concepts")
    fig, metrics, downloads, status = client.predict(cat, *ok, api_name="/concepts")
    assert status.startswith("Done") and "data-key='disentanglability'" in metrics
    assert _get(server) == 200


def test_run_concepts_equals_the_concepts_module_and_hand_metrics(offline):
    import math

    import torch
    import torch.nn.functional as F

    from vlexplain.app.concept_runner import run_concepts
    from vlexplain.app.render import concept_metrics_html, concept_png
    from vlexplain.data.photos import load_photo

    image = load_photo("cat")
    res = run_concepts(offline, image, "cat", CAT_CONCEPTS, image_name="chelsea.png")
    want = _direct_concepts(offline, image, "cat", CAT_CONCEPTS)
    torch.testing.assert_close(res.concepts, want["concepts"])
    torch.testing.assert_close(res.category, want["category"])
    assert res.prompts == want["prompts"] == ["a photo of a cat.", "cat, which has pointed ears.",
                                              "cat, which has long white whiskers.", "cat, which has striped fur."]
    # by hand: overlaps of the three pairs, the published squashing of their sum, cosine scores
    h = res.concepts.flatten(1)
    pairs = [float((h[i] * h[j]).sum()) for i in range(3) for j in range(i + 1, 3)]
    assert res.mean_overlap == pytest.approx(sum(pairs) / 3, rel=1e-5)
    assert res.overlap_sum == pytest.approx(sum(pairs), rel=1e-5)
    assert res.disentanglability == pytest.approx(1 / (1 + math.exp(-10 * (0.2 - sum(pairs) / 100))), rel=1e-5)
    assert res.disentanglability == pytest.approx(want["disentanglability"], rel=1e-6)
    assert res.localizability == pytest.approx(want["localizability"], rel=1e-6)
    assert res.localizability == pytest.approx(sum(res.per_concept_localizability) / 3, rel=1e-6)
    assert res.per_concept_localizability == pytest.approx(want["per"], rel=1e-6)
    with torch.no_grad():
        ie = F.normalize(offline.encode_image(want["px"]).float(), dim=-1)
        te = F.normalize(offline.encode_text(offline.tokenize(res.prompts)).float(), dim=-1)
    assert res.scores == pytest.approx((ie @ te.T)[0].tolist(), abs=1e-5)
    # the page's table shows those numbers; the figure has 1 + 1 + 3 panels in two rows of three
    html = concept_metrics_html(res)
    assert f"data-key='disentanglability'>{res.disentanglability:.4f}<" in html
    assert f"data-key='localizability:2'>{res.per_concept_localizability[1]:.4f}<" in html
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        arr = concept_png(res, Path(d) / "c.png")
    assert arr.shape[0] > 550 and 700 < arr.shape[1] < 1.5 * arr.shape[0] and arr.dtype == np.uint8

    one = run_concepts(offline, image, "cat", ["pointed ears"])  # one concept: no pairs to compare
    assert one.disentanglability is None and one.mean_overlap is None and "n/a" in concept_metrics_html(one)


def test_concept_inputs_and_files_get_clear_messages(tmp_path):
    from vlexplain.app.concept_runner import (
        MAX_DESCRIPTORS,
        parse_class,
        parse_descriptors,
        parse_templates,
        read_concept_file,
    )
    from vlexplain.errors import InputError

    assert parse_class("  snowy   owl ") == "snowy owl"
    assert parse_descriptors(" white  feathers \n\n yellow eyes\n", "owl") == ["white feathers", "yellow eyes"]
    for raw, msg in [("", "type a class name"), ("x" * 101, "limited to 100 characters")]:
        with pytest.raises(InputError, match=msg):
            parse_class(raw)
    for raw, msg in [(" \n", "at least one descriptor of 'owl'"),
                     ("\n".join(f"d{i}" for i in range(MAX_DESCRIPTORS + 1)), f"at most {MAX_DESCRIPTORS} descriptors"),
                     ("yellow eyes\nYellow  eyes.", "duplicate descriptors")]:
        with pytest.raises(InputError, match=msg):
            parse_descriptors(raw, "owl")
    assert parse_templates("", " ").category == "a photo of a {class}."
    assert parse_templates("a {class}", "{descriptor} of a {class}").concept_prompt("owl", "beak") == "beak of a owl"
    for cat, con in [("a {cls}", ""), ("a {class:>999999999}", ""), ("", "{descriptor.__class__}"), ("a {", ""),
                     ("a {0}", ""), ("", "{class!r} {descriptor}"), ("{descriptor}", "")]:
        with pytest.raises(InputError, match="bad prompt template"):
            parse_templates(cat, con)

    (tmp_path / "ok.csv").write_text("class,descriptor\nowl,white feathers\nowl,yellow eyes\ncat,whiskers\n")
    cs = read_concept_file(tmp_path / "ok.csv", "mine.csv")
    assert cs.classes == ["owl", "cat"] and cs.descriptors("owl") == ["white feathers", "yellow eyes"]
    assert cs.source == "mine.csv"
    bad = {
        "a.json": ('["owl"]', "must be a JSON object"),
        "b.json": ('{"owl": "white feathers"}', "not a class name with a list of strings"),
        "c.json": ('{"owl": []}', "no descriptors"),
        "d.csv": ("owl,white,feathers\n", "row 1: expected 2 columns"),
        "e.csv": (b"\xff\xfe\x00owl", "not a UTF-8 text file"),
        "f.txt": ("owl: feathers", "a concept file is a .json file"),
        "g.json": ("[" * 100_000, "cannot be read as a concept file"),
    }
    for name, (content, msg) in bad.items():
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(InputError, match=re.escape(msg)) as err:
            read_concept_file(p, f"upload-{name}")
        assert str(tmp_path) not in str(err.value) and f"upload-{name}" in str(err.value)


def test_explorer_concept_callbacks_fill_fields_and_refuse_unknown_classes(tmp_path):
    import gradio as gr

    from vlexplain.app.app import Explorer
    from vlexplain.app.concept_runner import SHAPES_PRESET
    from vlexplain.app.runner import ModelCache
    from vlexplain.data.shapes import concept_set

    ex = Explorer(ModelCache(lambda spec: pytest.fail("no model is needed here")))
    cls, descs, cat_tpl, con_tpl, status = ex.pick_concept_class(SHAPES_PRESET, "bus", None)
    assert (cls, descs.splitlines(), cat_tpl, con_tpl) == ("bus", concept_set()["bus"], "a {class}", "{descriptor}")
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"owl": [f"part {i}" for i in range(11)]}))
    _, class_menu, state, cleared, status = ex.upload_concepts({"path": str(many), "orig_name": "many.json"}, None)
    assert cleared is None
    assert status.startswith("Read 1 classes") and state["concepts"]["owl"][0] == "part 0"
    cls, descs, cat_tpl, _, status = ex.pick_concept_class(state["label"], "owl", state)
    assert len(descs.splitlines()) == 8 and "the first 8 of its 11" in status and cat_tpl == "a photo of a {class}."
    with pytest.raises(gr.Error, match="class 'eagle' is not in the concept set many.json"):
        ex.pick_concept_class(state["label"], "eagle", state)
    with pytest.raises(gr.Error, match="choose a concept set first"):
        ex.pick_concept_class("uploaded: other.json", "owl", state)
    label = "shapes scene (seed 1)"
    image, cls, descs, cat_tpl, con_tpl, status = ex.pick_concept_sample(label)
    assert image.mode == "RGB" and cls == "mushroom" and descs.splitlines() == concept_set()["mushroom"]
