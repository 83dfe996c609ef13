"""Ctrl-C and SIGTERM: every long command exits with 130 / 143 and one line, keeps its finished work and resumes.

Each command runs as a real subprocess; the signal is sent once the command has finished some work
(a file it writes appears), then the resumed run is checked to complete.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.llm import POOL, FakeServer, generate_args
from vlexplain.cli import main
from vlexplain.interrupt import Interrupted, atomic, catch_signals, message, track

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The resumed runs (in this process) use one thread, as the interrupted ones do."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def interrupt(args: list[str], ready: Callable[[], bool], log: Path, sig: int = signal.SIGINT) -> str:
    """Run ``vlexplain ARGS``, send ``sig`` once ``ready()``; check the exit code and return the last line."""
    with open(log, "w") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "vlexplain.cli", *args], env=ENV, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            deadline = time.monotonic() + 600
            while p.poll() is None and not ready() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert p.poll() is None, f"the command ended before it could be interrupted:\n{log.read_text()[-3000:]}"
            p.send_signal(sig)
            rc = p.wait(timeout=300)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = log.read_text()
    assert rc == 128 + sig, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return text.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """The tiny CLIP of conftest saved with save_pretrained, with a CLIP tokenizer (open_clip's vocabulary)."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    from tests.support.models import tiny_hf_clip

    path = tmp_path_factory.mktemp("tiny") / "model"
    path.mkdir()
    st = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (path / "vocab.json").write_text(json.dumps({special.get(k, k): v for k, v in st.encoder.items()}))
    merges = sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for (a, b), _ in merges))
    CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt")).save_pretrained(str(path))
    tiny_hf_clip().save_pretrained(str(path))
    return path


def _images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"img{i:02d}.png")
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(paths[-1])
    return paths


# --- the mechanism, in process ----------------------------------------------------------------------
def test_signal_becomes_interrupted_with_a_progress_line():
    with catch_signals() as caught:
        with pytest.raises(Interrupted) as e, track("pairs", 8, done=2) as work:
            work.advance()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # not reached: the handler raises first
        assert e.value.signum == signal.SIGINT and caught.signum == signal.SIGINT
        assert message() == "interrupted; 3 of 8 pairs done, rerun with --resume"


def test_atomic_block_finishes_before_the_interruption():
    steps, before = [], signal.getsignal(signal.SIGTERM)
    with catch_signals():
        with pytest.raises(Interrupted), track("steps", None, resume=None) as work:
            for _ in range(3):
                with atomic():
                    if work.done == 1:
                        os.kill(os.getpid(), signal.SIGTERM)
                    steps.append(work.done)
                    work.advance()
        assert steps == [0, 1] and message() == "terminated; 2 steps done"
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are restored


def test_in_process_main_returns_130(tmp_path, capsys):
    """main() itself (not only the console script) reports Ctrl-C as 130 with one line."""
    server, hold = FakeServer(), threading.Event()
    try:
        server.script = [("hold", hold)]
        classes = tmp_path / "classes.txt"
        classes.write_text("Cardinal\nBlue Jay\n")

        def ctrl_c() -> None:
            while not server.requests:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=ctrl_c, daemon=True).start()
        rc = main(
            generate_args(
                classes, server.url, tmp_path / "c.json", "--no-progress", model="m", k=None, cache=tmp_path / "cache"
            )
        )
        hold.set()
    finally:
        server.close()
    err = capsys.readouterr().err
    assert (
        rc == 130 and err == "interrupted; 0 of 2 classes done, rerun the same command (finished classes are cached)\n"
    )
    assert not (tmp_path / "c.json").exists()


def test_main_passes_on_exit_codes(capsys):
    """A command's own exit code (deal train's 3 for a stopped run) and a bare KeyboardInterrupt reach the caller."""
    import typer

    from vlexplain import cli

    def three() -> None:
        raise typer.Exit(3)

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    cli.app.command("test-exit-three")(three)
    cli.app.command("test-ctrl-c")(ctrl_c)
    try:
        assert main(["test-exit-three"]) == 3
        assert main(["test-ctrl-c"]) == 130 and capsys.readouterr().err.endswith("interrupted\n")
    finally:
        cli.app.registered_commands = [c for c in cli.app.registered_commands if c.callback not in (three, ctrl_c)]


# --- every long-running command, as a subprocess -----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_concepts_generate(tmp_path, sig):
    server, hold = FakeServer(), threading.Event()
    try:
        server.script = [(200, json.dumps({"descriptors": POOL[:4]})), ("hold", hold)]
        classes = tmp_path / "classes.txt"
        classes.write_text("Cardinal\nBlue Jay\nRobin\n")
        out = tmp_path / "concepts.json"
        args = generate_args(classes, server.url, out, cache=tmp_path / "cache")
        line = interrupt(args, lambda: len(server.requests) >= 2, tmp_path / "err.txt", sig)
        word = "interrupted" if sig == signal.SIGINT else "terminated"
        assert line == f"{word}; 1 of 3 classes done, rerun the same command (finished classes are cached)"
        assert not out.exists() and len(list((tmp_path / "cache").glob("*.json"))) == 1
        hold.set()
        assert main(args + ["--quiet"]) == 0
        assert len(server.requests) == 4  # Blue Jay asked again, Robin; Cardinal from the cache
        assert json.loads(out.read_text()) == {c: POOL[:4] for c in ("Cardinal", "Blue Jay", "Robin")}
    finally:
        hold.set()
        server.close()


@pytest.mark.slow
def test_explain_several_images(tmp_path, tiny_dir):
    images = _images(tmp_path / "img", 8)
    out = tmp_path / "out"
    args = [
        "explain",
        *map(str, images),
        "--text",
        "a red square",
        "--model",
        str(tiny_dir),
        "--method",
        "random",
        "--out",
        str(out),
    ]
    done = lambda: any(out.glob("0*.json"))
    line = interrupt(args, done, tmp_path / "err.txt")
    m = re.fullmatch(r"interrupted; (\d+) of 8 pairs done, rerun with --resume", line)
    assert m and 1 <= int(m.group(1)) < 8, line
    kept = sorted(out.glob("0*.json"))
    assert len(kept) >= int(m.group(1))
    stamp = kept[0].stat().st_mtime_ns
    assert main(args + ["--resume"]) == 0
    assert len(list(out.glob("0*.json"))) == 8 and kept[0].stat().st_mtime_ns == stamp  # kept, not redone
    assert (out / "index.html").read_text().count("class='card'") == 8


@pytest.mark.slow
def test_evaluate(tmp_path, tiny_dir):
    (tmp_path / "img").mkdir()
    images = _images(tmp_path / "img", 8)
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"image": str(p), "caption": f"a photo of thing {i}"}) + "\n" for i, p in enumerate(images))
    )
    run = tmp_path / "run"
    args = [
        "evaluate",
        "--data",
        str(data),
        "--model",
        str(tiny_dir),
        "--methods",
        "random",
        "--metrics",
        "deletion_image",
        "--metric-options",
        json.dumps({"deletion_image": {"n_steps": 2}}),
        "--batch-size",
        "1",
        "--shard-size",
        "1",
        "--out",
        str(run),
        "--no-progress",
    ]
    line = interrupt(args, lambda: (run / "shards" / "metrics-000000.parquet").exists(), tmp_path / "err.txt")
    m = re.fullmatch(r"interrupted; (\d+) of 8 pairs done, rerun with --resume", line)
    assert m and 1 <= int(m.group(1)) < 8, line
    assert len(list((run / "shards").glob("metrics-*.parquet"))) >= int(m.group(1))
    assert main(args + ["--resume"]) == 0
    assert json.loads((run / "manifest.json").read_text())["complete"]


@pytest.mark.slow
def test_benchmark(tmp_path):
    out = tmp_path / "bench"
    args = [
        "benchmark",
        "shapes",
        "--n",
        "8",
        "--methods",
        "random",
        "--metrics",
        "pointing_game",
        "--batch-size",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    line = interrupt(args, lambda: (out / "run" / "shards" / "metrics-000000.parquet").exists(), tmp_path / "err.txt")
    m = re.fullmatch(r"interrupted; (\d+) of 8 pairs done, rerun with --resume", line)
    assert m and 1 <= int(m.group(1)) < 8, line
    assert main(args + ["--resume"]) == 0
    assert json.loads((out / "run" / "manifest.json").read_text())["complete"] and (out / "leaderboard.md").exists()


@pytest.mark.slow
def test_deal_train(tmp_path):
    out = tmp_path / "deal"
    args = [
        "deal",
        "train",
        "--data",
        "shapes:8",
        "--model",
        "testbed:shapes",
        "--steps",
        "16",
        "--save-every",
        "2",
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    line = interrupt(args, lambda: (out / "checkpoint" / "state.json").exists(), tmp_path / "err.txt")
    m = re.fullmatch(r"interrupted; (\d+) of 16 steps done, rerun \(without --fresh\) to continue", line)
    assert m and 2 <= int(m.group(1)) < 16, line
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == int(
        m.group(1)
    )  # saved on the way out
    assert main(args) == 0
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 16


@pytest.mark.slow
def test_train_shapes(tmp_path):
    out = tmp_path / "shapes"
    common = [
        "testbed",
        "train-shapes",
        "--processes",
        "1",
        "--threads",
        "1",
        "--batch-size",
        "8",
        "--no-evaluate",
        "--out",
        str(out),
    ]
    args = common + ["--minutes", "1", "--save-every", "0.5"]
    line = interrupt(args, lambda: (out / "model.safetensors").exists(), tmp_path / "err.txt")
    m = re.fullmatch(
        rf"interrupted; (\d+) steps done, weights saved to {re.escape(str(out))}; "
        rf"continue with --init-from {re.escape(str(out))}",
        line,
    )
    assert m and int(m.group(1)) >= 1, line
    rows = (out / "train_log.csv").read_text().strip().splitlines()[1:]
    assert int(m.group(1)) - 1 <= len(rows) <= int(m.group(1))  # the last step's row may be cut with it
    assert main(common + ["--init-from", str(out), "--minutes", "1", "--steps", "2"]) == 0
    assert json.loads((out / "train_info.json").read_text())["steps"] == 2
