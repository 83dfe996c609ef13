"""Shared pieces of the web explorer's end-to-end tests: a real server process and a real browser.

The server runs the offline model in a subprocess on a free port. The browser tests drive Debian's
chromium (``/usr/bin/chromium``) through Playwright.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": str(SERVER_THREADS),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    cmd = [
        sys.executable,
        "-m",
        "vlexplain.cli",
        "serve",
        "--model",
        "offline",
        "--port",
        str(port),
        "--max-upload-mb",
        str(MAX_UPLOAD_MB),
        "--concurrency",
        "2",
    ]
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


def _wait_toast(page, pattern: str) -> str:
    loc = page.get_by_text(re.compile(pattern, re.I)).first
    loc.wait_for(timeout=30_000)
    return loc.inner_text()


def _screenshot(page, env_var: str, default: Path) -> Path:
    """Save a full-page screenshot (to ``$env_var`` when set) and check it holds a page."""
    shot = Path(os.environ.get(env_var, default))
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    return shot
