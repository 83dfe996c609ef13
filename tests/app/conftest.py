"""Fixtures of the web explorer's end-to-end tests: a real server process and a real browser."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app.support import CHROMIUM, CHROMIUM_ARGS, MAX_UPLOAD_MB, SERVER_THREADS, _free_port, _get


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
