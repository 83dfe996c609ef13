"""A fake OpenAI-compatible chat server on 127.0.0.1 for the concept-generation tests."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POOL = [
    "Red crest",
    "Black face mask",
    "Short, thick bill",
    "Long tail feathers",
    "Grey wings",
    "Brown legs",
    "Pale belly",
    "Dark eyes",
]


def completion(text: str) -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
    }


class FakeServer:
    """Records every request; answers from ``script`` first, then with a valid reply.

    A script entry is ``(status, body)``, ``(status, body, headers)``, ``("sleep", seconds)`` (then
    a valid reply), ``("trickle", seconds)`` (a valid reply sent one byte per ``seconds``; ``cut``
    counts the clients that hung up before its end) or ``("hold", event)`` (waits for the
    ``threading.Event``, then a valid reply); a str body is sent as the reply's text inside a chat
    completion when status is 200.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[tuple] = []
        self.cut = 0
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
                trickle = None
                if step is not None and step[0] == "sleep":
                    time.sleep(step[1])
                    step = None
                elif step is not None and step[0] == "hold":
                    step[1].wait(60)
                    step = None
                elif step is not None and step[0] == "trickle":
                    trickle, step = step[1], None
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
                    if trickle is None:
                        self.wfile.write(data)
                    for i in range(len(data) if trickle is not None else 0):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(trickle)
                except OSError:  # the client gave up waiting
                    with owner.lock:
                        owner.cut += 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def generate_args(
    classes, url: str, out, *flags: str, model: str = "fake-llm", k: int | None = 4, cache=None
) -> list[str]:
    """``vlexplain concepts generate`` argv as a user types it: the classes file, the server, the
    model name, ``--k`` (None: the default), ``--out``, ``--cache`` (None: the default), then ``flags``."""
    args = ["concepts", "generate", "--classes", str(classes), "--base-url", url, "--model", model]
    if k is not None:
        args += ["--k", str(k)]
    args += ["--out", str(out)]
    if cache is not None:
        args += ["--cache", str(cache)]
    return args + list(flags)
