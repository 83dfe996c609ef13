"""Helpers of the web explorer's end-to-end tests (the server and browser fixtures are in conftest.py).

The server runs the offline model in a subprocess on a free port. The browser tests drive Debian's
chromium (``/usr/bin/chromium``) through Playwright.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

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
