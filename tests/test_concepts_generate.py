"""Concept sets from an OpenAI-compatible chat endpoint, against a local fake server."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlexplain.cli import main
from vlexplain.concepts.generate import chat_url, generate_concepts, parse_descriptors, read_classes, ReplyError
from vlexplain.concepts.sets import load_concepts
from vlexplain.errors import InputError

POOL = ["Red crest", "Black face mask", "Short, thick bill", "Long tail feathers", "Grey wings", "Brown legs",
        "Pale belly", "Dark eyes"]


def completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


class FakeServer:
    """Records every request; answers from ``script`` first, then with a valid reply.

    A script entry is ``(status, body)``, ``(status, body, headers)`` or ``("sleep", seconds)``;
    a str body is sent as the reply's text inside a chat completion when status is 200.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[tuple] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = owner.script.pop(0) if owner.script else None
                if step is not None and step[0] == "sleep":
                    time.sleep(step[1])
                    step = None
                if step is None:
                    user = body["messages"][1]["content"]
                    k = int(re.search(r"List (\d+) ", user).group(1))
                    step = (200, json.dumps({"descriptors": POOL[:k]}))
                status, payload = step[0], step[1]
                headers = step[2] if len(step) > 2 else {}
                if status == 200 and isinstance(payload, str):
                    payload = completion(payload)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for h, v in headers.items():
                        self.send_header(h, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up waiting
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def sleeps():
    return []


def gen(server, sleeps, tmp_path, classes=("Cardinal", "Blue Jay"), k=4, **kw):
    kw.setdefault("retries", 3)
    return generate_concepts(list(classes), server.url, "fake-llm", k, cache_dir=tmp_path / "cache",
                             sleep=sleeps.append, **kw)


def test_request_shape_result_and_cache(server, sleeps, tmp_path, monkeypatch):
    monkeypatch.setenv("VX_TEST_KEY", "sk-test-123")
    out = gen(server, sleeps, tmp_path, api_key_env="VX_TEST_KEY")
    assert out == {"Cardinal": POOL[:4], "Blue Jay": POOL[:4]}
    assert len(server.requests) == 2
    r = server.requests[0]
    assert r["path"] == "/v1/chat/completions"
    assert r["headers"]["Authorization"] == "Bearer sk-test-123"
    assert r["headers"]["Content-Type"] == "application/json"
    body = r["body"]
    assert body["model"] == "fake-llm" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert '"Cardinal"' in body["messages"][1]["content"] and "List 4 " in body["messages"][1]["content"]
    assert '"Blue Jay"' in server.requests[1]["body"]["messages"][1]["content"]
    assert load_concepts(out).descriptors("Blue Jay") == POOL[:4]
    # a rerun is answered from the cache; nothing half-written is left there
    assert gen(server, sleeps, tmp_path, api_key_env="VX_TEST_KEY") == out
    assert len(server.requests) == 2
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    # another k or model is another cache entry; use_cache=False asks again
    assert gen(server, sleeps, tmp_path, classes=["Cardinal"], k=3)["Cardinal"] == POOL[:3]
    assert len(server.requests) == 3
    gen(server, sleeps, tmp_path, classes=["Cardinal"], use_cache=False)
    assert len(server.requests) == 4
    assert sleeps == []


def test_fenced_reply_is_cleaned_and_trimmed(server, sleeps, tmp_path):
    reply = 'Sure!\n```json\n{"descriptors": ["1. Red crest.", "- Black  face mask", "Red Crest", "Grey wings", ' \
            '"Pale belly", "Dark eyes"]}\n```\n'
    server.script = [(200, reply)]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"], k=4)
    # numbering, bullets, periods and spacing removed; the case-insensitive repeat dropped; first 4 kept
    assert out == {"Cardinal": ["Red crest", "Black face mask", "Grey wings", "Pale belly"]}
    assert "Authorization" not in server.requests[0]["headers"]  # localhost: no key needed


def test_invalid_reply_is_sent_back_then_fixed(server, sleeps, tmp_path):
    server.script = [(200, "I think a cardinal is red.")]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"])
    assert out["Cardinal"] == POOL[:4]
    assert len(server.requests) == 2
    msgs = server.requests[1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "I think a cardinal is red."
    assert "not valid JSON" in msgs[3]["content"]
    assert sleeps == []


def test_too_few_descriptors_fails_naming_the_class_and_keeps_the_others(server, sleeps, tmp_path):
    few = json.dumps({"descriptors": ["Red crest", "Cardinal", "a very long descriptor that goes on and on here"]})
    server.script = [(200, few), (200, few)]
    with pytest.raises(InputError, match=r"'Cardinal' \(expected 4 usable descriptors, got 1"):
        gen(server, sleeps, tmp_path, retries=1)
    assert len(server.requests) == 3  # Cardinal twice, then Blue Jay
    # the feedback names what was wrong
    feedback = server.requests[1]["body"]["messages"][3]["content"]
    assert "only the category name" in feedback and "more than 8 words" in feedback
    # a rerun asks only for the class that failed
    out = gen(server, sleeps, tmp_path, retries=1)
    assert len(server.requests) == 4 and '"Cardinal"' in server.requests[3]["body"]["messages"][1]["content"]
    assert list(out) == ["Cardinal", "Blue Jay"]


def test_429_honours_retry_after_and_5xx_backs_off(server, sleeps, tmp_path):
    busy = {"error": {"message": "rate limited"}}
    server.script = [(429, busy, {"Retry-After": "2"}), (500, "oops"), (503, "oops"), (502, "oops")]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"], backoff=0.5, retries=4)
    assert out["Cardinal"] == POOL[:4]
    assert len(server.requests) == 5
    assert sleeps == [2.0, 1.0, 2.0, 4.0]  # Retry-After, then 0.5 * 2**attempt


def test_5xx_gives_up_after_retries(server, sleeps, tmp_path):
    server.script = [(500, {"error": {"message": "model overloaded"}})] * 3
    with pytest.raises(InputError, match="HTTP 500: model overloaded.*gave up after 3 attempt"):
        gen(server, sleeps, tmp_path, classes=["Cardinal"], retries=2, backoff=0.1)
    assert len(server.requests) == 3 and sleeps == [0.1, 0.2]


def test_401_fails_at_once_with_the_server_message(server, sleeps, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    server.script = [(401, {"error": {"message": "Incorrect API key provided"}})]
    with pytest.raises(InputError, match="HTTP 401: Incorrect API key provided"):
        gen(server, sleeps, tmp_path)
    assert len(server.requests) == 1 and sleeps == []
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_timeout_is_retried(server, sleeps, tmp_path):
    server.script = [("sleep", 0.8)]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"], timeout=0.2, retries=1, backoff=0.25)
    assert out["Cardinal"] == POOL[:4] and sleeps == [0.25] and len(server.requests) == 2


def test_missing_key_for_a_remote_server(tmp_path, monkeypatch):
    monkeypatch.delenv("VX_NO_SUCH_KEY", raising=False)
    with pytest.raises(InputError, match="set the environment variable VX_NO_SUCH_KEY"):
        generate_concepts(["Cardinal"], "https://llm.example.com/v1", "m", api_key_env="VX_NO_SUCH_KEY",
                          cache_dir=tmp_path)


@pytest.mark.parametrize("given,url", [
    ("http://localhost:8000/v1", "http://localhost:8000/v1/chat/completions"),
    ("http://localhost:8000/v1/", "http://localhost:8000/v1/chat/completions"),
    ("http://localhost:8000", "http://localhost:8000/v1/chat/completions"),
    ("https://host/openai/v1", "https://host/openai/v1/chat/completions"),
    ("https://host/v1/chat/completions", "https://host/v1/chat/completions"),
])
def test_chat_url(given, url):
    assert chat_url(given) == url


def test_chat_url_rejects_non_http():
    with pytest.raises(InputError, match="http"):
        chat_url("localhost:8000")


def test_parse_descriptors_rules():
    assert parse_descriptors('["Red crest", "Black mask", "Grey wings"]', "Cardinal", 2) == ["Red crest", "Black mask"]
    assert parse_descriptors('{"items": ["A b", "C d"]}', "X", 2) == ["A b", "C d"]
    with pytest.raises(ReplyError, match="a repeat"):
        parse_descriptors('{"descriptors": ["Red crest", "red  crest."]}', "Cardinal", 2)
    with pytest.raises(ReplyError, match="more than 3 words"):
        parse_descriptors('{"descriptors": ["Red crest", "one two three four"]}', "Cardinal", 2, max_words=3)
    with pytest.raises(ReplyError, match="only the category name"):
        parse_descriptors('{"descriptors": ["Red crest", "Blue-Jay"]}', "Blue Jay", 2)
    with pytest.raises(ReplyError, match="not valid JSON"):
        parse_descriptors('{"descriptors": ["Red crest",', "Cardinal", 1)


def test_read_classes(tmp_path):
    p = tmp_path / "classes.txt"
    p.write_text("# birds\nCardinal\n\n  Blue   Jay \n")
    assert read_classes(p) == ["Cardinal", "Blue Jay"]
    j = tmp_path / "c.json"
    j.write_text('["Cardinal", "Blue Jay"]')
    assert read_classes(j) == ["Cardinal", "Blue Jay"]
    folders = tmp_path / "ds"
    for d in ("Blue_Jay", "Cardinal", ".hidden"):
        (folders / d).mkdir(parents=True)
    assert read_classes(folders) == ["Blue Jay", "Cardinal"]
    cub = tmp_path / "cub" / "CUB_200_2011"
    cub.mkdir(parents=True)
    (cub / "classes.txt").write_text("2 017.Cardinal\n1 001.Black_footed_Albatross\n")
    assert read_classes(tmp_path / "cub") == ["Black footed Albatross", "Cardinal"]
    p.write_text("Cardinal\ncardinal\n")
    with pytest.raises(InputError, match="repeated class names"):
        read_classes(p)
    with pytest.raises(InputError, match="not found"):
        read_classes(tmp_path / "nope.txt")


def test_cli_end_to_end(server, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("Cardinal\nBlue Jay\n")
    out = tmp_path / "set" / "concepts.json"
    args = ["concepts", "generate", "--classes", str(classes), "--base-url", server.url, "--model", "fake-llm",
            "--k", "5", "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 0
    cs = load_concepts(out)
    assert cs.classes == ["Cardinal", "Blue Jay"] and cs.descriptors("Cardinal") == POOL[:5]
    assert "2 generated, 0 from the cache" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 generated, 2 from the cache" in capsys.readouterr().out
    assert len(server.requests) == 2


def test_cli_errors(tmp_path, capsys):
    out = tmp_path / "concepts.json"
    rc = main(["concepts", "generate", "--classes", str(tmp_path / "missing.txt"), "--base-url",
               "http://127.0.0.1:9/v1", "--model", "m", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --classes") and "not found" in err
    classes = tmp_path / "classes.txt"
    classes.write_text("Cardinal\n")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["concepts", "generate", "--classes", str(classes), "--base-url", f"http://127.0.0.1:{port}/v1",
               "--model", "m", "--out", str(out), "--retries", "0", "--cache", str(tmp_path / "cache"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "no answer" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
