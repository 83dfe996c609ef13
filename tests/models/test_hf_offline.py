"""hf: specs without the hub: the local cache is used, anything else fails at once with exit 2 and
one line naming the local alternative (HF_HUB_OFFLINE honoured; otherwise one failed probe)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _cli(args, env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(env_extra, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "vlexplain.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache holding one tiny CLIP as the hub client lays it out."""
    from vlexplain.models.hf_clip import tiny_clip

    root = tmp_path_factory.mktemp("hfcache")
    repo = root / "models--someorg--tiny-clip"
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    tiny_clip().save_pretrained(snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snap.name)
    return root


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_cached_model_loads(hub_cache):
    ok = _cli(["methods", "--model", "hf:someorg/tiny-clip"], {"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"})
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "default layers" in ok.stdout and "gradcam" in ok.stdout


@pytest.fixture
def fresh_hub_state(monkeypatch):
    from vlexplain.models import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub.forget_hub_state()
    yield monkeypatch
    hub.forget_hub_state()


def _one_line_exit_2(capsys, spec: str) -> str:
    from vlexplain.cli import main

    assert main(["methods", "--model", spec]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0]
    return lines[0]


def test_offline_switch_fails_in_one_line(fresh_hub_state, capsys):
    fresh_hub_state.setenv("HF_HUB_OFFLINE", "1")
    line = _one_line_exit_2(capsys, "hf:someorg/not-cached-anywhere")
    assert "HF_HUB_OFFLINE is set" in line and "save_pretrained directory" in line


def test_unreachable_hub_is_detected_without_the_switch(fresh_hub_state, capsys):
    fresh_hub_state.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    line = _one_line_exit_2(capsys, "hf:someorg/not-cached-anywhere")
    assert "cannot be reached" in line and "--model PATH" in line
