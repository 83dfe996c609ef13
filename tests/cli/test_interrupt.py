"""Ctrl-C and SIGTERM: every long command exits with 130 / 143 and one line, keeps its finished work and resumes.

Each command runs as a real subprocess; the signal is sent once the command has finished some work
(a file it writes appears), then the resumed run is checked to complete.
"""

from __future__ import annotations

import json
import os
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
from tests.support.pause import pause_command
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


def interrupt(
    args: list[str], log: Path, sig: int = signal.SIGINT, *, ready: Callable[[], bool] | None = None, pause=None
) -> str:
    """Run ``vlexplain ARGS`` and send ``sig`` once it is ready; check the exit code and return the last line.

    ``pause=(MODULE:FUNCTION, N)``: the command stops at the (N+1)-th call of that function (see
    ``tests/support/pause.py``) and the signal is sent there, so exactly N calls are finished. ``ready``:
    instead, a condition on what the command has written or asked (polled until it holds)."""
    flag = log.with_suffix(".ready")
    cmd = [sys.executable, "-m", "vlexplain.cli"] if pause is None else pause_command(pause[0], pause[1], flag)
    wait = ready if pause is None else flag.exists
    with open(log, "w") as err:
        p = subprocess.Popen([*cmd, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        try:
            while p.poll() is None and not wait():  # waits on a file or a request, not on time
                time.sleep(0.02)
            assert p.poll() is None, f"the command ended before it could be interrupted:\n{log.read_text()[-3000:]}"
            p.send_signal(sig)
            rc = p.wait()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = log.read_text()
    assert rc == 128 + sig, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return text.strip().splitlines()[-1]


#: the call every attribution batch goes through (explain, evaluate, benchmark)
BATCH = "vlexplain.attribution.api:run_explainer"


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
        line = interrupt(args, tmp_path / "err.txt", sig, ready=lambda: len(server.requests) >= 2)
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
    line = interrupt(args, tmp_path / "err.txt", pause=(BATCH, 3))
    assert line == "interrupted; 3 of 8 pairs done, rerun with --resume"
    kept = sorted(out.glob("0*.json"))
    assert len(kept) == 3
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
    line = interrupt(args, tmp_path / "err.txt", pause=(BATCH, 2))  # shards of one pair: 2 shards done
    assert line == "interrupted; 2 of 8 pairs done, rerun with --resume"
    assert len(list((run / "shards").glob("metrics-*.parquet"))) == 2
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
    # (shards of one pair, two methods: random and the center reference; two pairs done after four calls)
    line = interrupt(args, tmp_path / "err.txt", pause=(BATCH, 4))
    assert line == "interrupted; 2 of 8 pairs done, rerun with --resume"
    assert len(list((out / "run" / "shards").glob("metrics-*.parquet"))) == 2
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
    line = interrupt(args, tmp_path / "err.txt", pause=("vlexplain.concepts.train:deal_losses", 3))
    assert line == "interrupted; 3 of 16 steps done, rerun (without --overwrite) to continue"
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3  # saved on the way out
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
    args = common + ["--minutes", "2"]
    # (the learning-rate schedule is read at the start of every step, outside the step's atomic block)
    line = interrupt(args, tmp_path / "err.txt", pause=("vlexplain.testbeds.shapes_train:_lr_factor", 2))
    assert line == f"interrupted; 2 steps done, weights saved to {out}; continue with --init-from {out}"
    assert (out / "model.safetensors").is_file()  # saved on the way out
    rows = (out / "train_log.csv").read_text().strip().splitlines()[1:]
    assert len(rows) == 2
    assert main(common + ["--init-from", str(out), "--minutes", "1", "--steps", "2"]) == 0
    assert json.loads((out / "train_info.json").read_text())["steps"] == 2


# --- a signal right after a unit's file is written: the count includes it ------------------------------
def test_signal_right_after_a_shard_is_written_counts_it(tmp_path, monkeypatch, hf_clip):
    from vlexplain.eval import runner
    from vlexplain.eval.runner import evaluate

    images = _images(tmp_path / "img", 3)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"image": str(p), "caption": "a photo"}) + "\n" for p in images))
    write = runner.write_table

    def write_then_signal(*args, **kwargs):
        write(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # lands before the shard is counted, unless held

    monkeypatch.setattr(runner, "write_table", write_then_signal)
    with catch_signals(), pytest.raises(Interrupted):
        evaluate(
            data,
            hf_clip,
            ["random"],
            ["deletion_image"],
            tmp_path / "run",
            batch_size=1,
            shard_size=1,
            metric_options={"deletion_image": {"n_steps": 2}},
            progress=False,
        )
    kept = len(list((tmp_path / "run" / "shards").glob("metrics-*.parquet")))
    assert kept == 1 and message() == "interrupted; 1 of 3 pairs done, rerun with --resume"


def test_signal_right_after_a_pair_is_saved_counts_it(tmp_path, monkeypatch, hf_clip):
    from vlexplain.commands import explain as cmd

    images = _images(tmp_path / "img", 2)
    save = cmd.save_entry

    def save_then_signal(*args, **kwargs):
        entry = save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return entry

    monkeypatch.setattr(cmd, "save_entry", save_then_signal)
    with catch_signals(), pytest.raises(Interrupted):
        cmd.run_pairs(
            hf_clip,
            [(str(p), p) for p in images],
            ["a photo"],
            method="random",
            out=tmp_path / "out",
            zip_pairs=False,
            seed=0,
            target="cosine",
            options={},
        )
    assert len(list((tmp_path / "out").glob("0*.json"))) == 1
    assert message() == "interrupted; 1 of 2 pairs done, rerun with --resume"


def test_ctrl_c_while_starting_up_is_one_line(tmp_path):
    """The signal handlers are installed before anything heavy is imported: a Ctrl-C in the first
    moments (here: while the commands are being registered) ends with one line, not a traceback."""
    args = ["explain", "x.png", "-t", "a cat", "--out", str(tmp_path / "out")]
    line = interrupt(args, tmp_path / "err.txt", pause=("vlexplain.cli:_register_commands", 0))
    assert line == "interrupted"
    assert (tmp_path / "err.ready").read_text() == "-"  # neither torch nor transformers was imported yet
    assert len((tmp_path / "err.txt").read_text().strip().splitlines()) == 1
