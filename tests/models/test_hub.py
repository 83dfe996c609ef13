"""hub_offline: the environment switch, one probe per process, a bounded probe time."""

from __future__ import annotations

import socket

import pytest

from vlexplain.models import hub


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub.forget_hub_state()
    yield
    hub.forget_hub_state()


def test_env_switch_wins_without_probing(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_reachable", lambda *a, **k: pytest.fail("probed although HF_HUB_OFFLINE is set"))
    assert hub.hub_offline() is True
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "_reachable", lambda *a, **k: True)
    assert hub.hub_offline() is False


def test_reachable_endpoint_is_online_and_probed_once(monkeypatch):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    calls = []
    real = hub._reachable
    monkeypatch.setattr(hub, "_reachable", lambda *a, **k: calls.append(a) or real(*a, **k))
    try:
        assert hub.hub_offline() is False
        assert hub.hub_offline() is False
    finally:
        srv.close()
    assert calls == [("127.0.0.1", port)], "the probe must run once per process"
    assert hub.hub_endpoint() == ("127.0.0.1", port)


def test_unreachable_endpoint_is_offline_within_the_timeout(monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: refused at once
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert hub.hub_offline() is True
    hub.forget_hub_state()
    monkeypatch.setenv("HF_ENDPOINT", "https://no-such-host.invalid")
    assert hub.hub_offline(timeout=1.0) is True


def test_offline_error_names_the_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = hub.offline_error("hf:org/name", "a save_pretrained directory (--model PATH)")
    msg = str(e)
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg and "save_pretrained directory" in msg
