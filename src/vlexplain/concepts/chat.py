"""A minimal OpenAI-compatible chat client (stdlib only) for concept generation.

Time limits mean what they say: ``timeout`` bounds the whole reply (a server that trickles a byte
at a time is cut off at the limit, not after each read), a refused connection fails at once, and
every wait longer than a moment is announced: a line per retry, and a line when a reply is slow.

The base URL is what an OpenAI client takes as ``base_url`` (``https://api.openai.com/v1``,
``http://localhost:11434/v1``): requests go to ``{base_url}/chat/completions``. A URL with no path
(``http://localhost:8000``) gets ``/v1`` appended, and a URL that already ends in
``/chat/completions`` is used as it is.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from ..errors import InputError

#: longest wait between two attempts, in seconds (also caps a server's Retry-After)
MAX_WAIT = 120.0
#: HTTP codes that refuse this one request (bad input, too long...): the class fails, the run goes on
REQUEST_CODES = (400, 413, 422)
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


class ServerError(InputError):
    """The server cannot be used (refused connection, bad key, wrong URL, failures that persist)."""


class RequestError(InputError):
    """The server refused this one request (HTTP 400, 413, 422); other requests may still work."""


class _Retryable(Exception):
    """A transient failure (HTTP 429/5xx, timeout, lost connection); ``wait`` is the server's hint."""

    def __init__(self, message: str, wait: float | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.wait, self.timed_out = wait, timed_out


def chat_url(base_url: str) -> str:
    """The chat-completions URL of an OpenAI-style base URL (see the module docstring)."""
    url = base_url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"--base-url {base_url!r}: expected an http(s) URL such as http://localhost:8000/v1")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path or "/v1") + "/chat/completions"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (then no API key is needed)."""
    return (urllib.parse.urlsplit(url).hostname or "").lower() in _LOOPBACK


def stderr_notify(message: str) -> None:
    """The default way a client reports a retry or a slow reply: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(body: bytes) -> str:
    text = body[:65536].decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return text[:300]
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])[:300]
    if isinstance(err, str):
        return err[:300]
    if isinstance(obj, dict) and obj.get("message"):
        return str(obj["message"])[:300]
    return text[:300]


class ChatClient:
    """OpenAI-compatible chat client with a whole-reply time limit, retries and visible waits.

    Args:
        base_url: the OpenAI-style base URL (see ``chat_url``).
        model: the model name sent with each request.
        api_key: sent as ``Authorization: Bearer``; None or "" sends no header.
        timeout: seconds one reply may take in all, from the request to its last byte.
        retries: further attempts after a 429, a 5xx or a lost connection.
        timeout_retries: further attempts after a reply that hit ``timeout`` (at most ``retries``).
        backoff: first wait in seconds; doubled after each failure (capped at ``MAX_WAIT``);
            a ``Retry-After`` header takes precedence.
        sleep: the function that waits (tests pass a recorder).
        notify: called with one line per retry and per slow reply (None: silent).
        notice_after: seconds a reply may take before ``notify`` says what is awaited.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        timeout_retries: int = 1,
        backoff: float = 1.0,
        sleep: Callable[[float], Any] = time.sleep,
        notify: Callable[[str], Any] | None = None,
        notice_after: float = 10.0,
    ) -> None:
        self.url = chat_url(base_url)
        self.model = model
        self.api_key = api_key or None
        self.timeout, self.retries, self.backoff, self.sleep = timeout, retries, backoff, sleep
        self.timeout_retries = min(timeout_retries, retries)
        self.notify, self.notice_after = notify, notice_after
        self.requests = 0

    def say(self, message: str) -> None:
        """Pass one line to ``notify`` (nothing when it is None)."""
        if self.notify is not None:
            self.notify(message)

    def complete(self, messages: list[dict], temperature: float = 0.0, label: str = "") -> str:
        """Send one chat request (retrying transient failures); returns the reply's text.

        Args:
            label: what the request is for (a class name), for the retry and waiting lines.

        Raises:
            RequestError: HTTP 400, 413 or 422 (this request is refused).
            ServerError: a refused connection, any other HTTP error, or a transient failure
                that persists after the allowed attempts.
        """
        body = json.dumps({"model": self.model, "messages": messages, "temperature": temperature}).encode()
        who = f"{label}: " if label else ""
        attempt = timeouts = 0
        while True:
            try:
                return self._post(body, who)
            except _Retryable as e:
                timeouts += e.timed_out
                if attempt >= self.retries or timeouts > self.timeout_retries:
                    raise ServerError(f"{self.url}: {e} (gave up after {attempt + 1} attempt(s))") from None
                wait = min(e.wait if e.wait is not None else self.backoff * 2**attempt, MAX_WAIT)
                self.say(f"{who}{e}; retrying in {wait:.3g} s (attempt {attempt + 2} of at most {self.retries + 1})")
                self.sleep(wait)
                attempt += 1

    def _connection(self) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
        """A connection (through the environment's proxy where one applies), the request target, headers."""
        parts = urllib.parse.urlsplit(self.url)
        host, port = parts.hostname or "", parts.port
        target = urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
        extra: dict[str, str] = {}
        proxy = (
            None
            if is_loopback(self.url) or urllib.request.proxy_bypass(host)
            else urllib.request.getproxies().get(parts.scheme)
        )
        ctx = ssl.create_default_context() if parts.scheme == "https" else None
        if proxy:
            p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
            auth = {}
            if p.username:
                token = base64.b64encode(
                    f"{urllib.parse.unquote(p.username)}:{urllib.parse.unquote(p.password or '')}".encode()
                ).decode()
                auth = {"Proxy-Authorization": f"Basic {token}"}
            if parts.scheme == "https":
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    p.hostname or "", p.port or 8080, timeout=self.timeout, context=ctx
                )
                conn.set_tunnel(host, port or 443, headers=auth)
            else:
                conn = http.client.HTTPConnection(p.hostname or "", p.port or 8080, timeout=self.timeout)
                target, extra = self.url, auth
        elif parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, port or 443, timeout=self.timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port or 80, timeout=self.timeout)
        return conn, target, extra

    def _post(self, body: bytes, who: str) -> str:
        conn, target, headers = self._connection()
        headers.update({"Content-Type": "application/json", "Accept": "application/json"})
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self.requests += 1
        expired = threading.Event()
        held: list[socket.socket] = []  # the connection's socket (http.client lets go of it early)

        def expire() -> None:  # the whole-reply limit: cut the connection, whatever it is doing
            expired.set()
            for sock in held:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timers = [threading.Timer(self.timeout, expire)]
        if self.notice_after < self.timeout:
            timers.append(
                threading.Timer(
                    self.notice_after,
                    self.say,
                    (
                        f"{who}waiting for {self.model} at {self.url} ({self.notice_after:.3g} s so far; "
                        f"limit {self.timeout:.3g} s per reply, --timeout)",
                    ),
                )
            )
        for t in timers:
            t.daemon = True
            t.start()
        r = None
        try:
            conn.connect()
            held.append(conn.sock)
            conn.request("POST", target, body=body, headers=headers)
            r = conn.getresponse()
            chunks = []
            while chunk := r.read(65536):
                chunks.append(chunk)
            raw, status = b"".join(chunks), r.status
            retry_after = r.getheader("Retry-After")
        except (ConnectionRefusedError, socket.gaierror) as e:
            if expired.is_set():
                raise _Retryable(f"no complete reply within {self.timeout:g} s", timed_out=True) from None
            what = "connection refused" if isinstance(e, ConnectionRefusedError) else f"cannot resolve the host ({e})"
            raise ServerError(f"{self.url}: {what}; is the server running and is --base-url right?") from None
        except (OSError, http.client.HTTPException) as e:
            if expired.is_set():
                raise _Retryable(f"no complete reply within {self.timeout:g} s", timed_out=True) from None
            raise _Retryable(f"no answer ({e or type(e).__name__})") from None
        finally:
            for t in timers:
                t.cancel()
            if r is not None:
                r.close()  # the socket closes only once the response lets go of it too
            conn.close()
        if expired.is_set():  # the cut may read as a clean end of a truncated reply
            raise _Retryable(f"no complete reply within {self.timeout:g} s", timed_out=True)
        return self._content(status, raw, retry_after)

    def _content(self, status: int, raw: bytes, retry_after: str | None) -> str:
        if status >= 400:
            msg = _server_message(raw) or http.client.responses.get(status, "")
            if status == 429 or status >= 500:
                raise _Retryable(f"HTTP {status}: {msg}", _retry_after(retry_after))
            if status in REQUEST_CODES:
                raise RequestError(f"HTTP {status}: {msg}")
            hint = " (is the base URL right? most servers expect it to end in /v1)" if status == 404 else ""
            raise ServerError(f"{self.url}: HTTP {status}: {msg}{hint}")
        try:
            reply = json.loads(raw)
            content = reply["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
            raise _Retryable(f"the server's answer is not a chat completion: {raw[:200]!r}") from None
        if not isinstance(content, str):
            raise _Retryable("the server's answer has no text content")
        return content
