"""Generate concept sets with a language model behind an OpenAI-compatible chat endpoint.

For every class one chat request asks for ``k`` short, visual, mutually distinct descriptors
(``{"descriptors": ["Long, pointed wings", ...]}``); the reply is parsed (code fences tolerated),
checked and, when it does not pass, asked again with the problem stated. Replies are cached on disk
per (endpoint, model, class, k, prompt), so a rerun or a run resumed after an interruption makes no
request for the classes already done::

    concepts = generate_concepts(["Cardinal", "Blue Jay"], "http://localhost:8000/v1", "llama3")
    # {'Cardinal': ['Red crest', 'Black face mask', ...], 'Blue Jay': [...]}

The base URL is what an OpenAI client takes as ``base_url`` (``https://api.openai.com/v1``,
``http://localhost:11434/v1``): requests go to ``{base_url}/chat/completions``. A URL with no path
(``http://localhost:8000``) gets ``/v1`` appended, and a URL that already ends in
``/chat/completions`` is used as it is.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import InputError
from .sets import MAX_WORDS, _norm_descriptor, normalize_name, validate

#: bump when the prompt changes, so cached replies of an older prompt are not reused
PROMPT_VERSION = 1
#: longest descriptor accepted from the model, in words (the published sets use 2-6)
DEFAULT_MAX_WORDS = 8
#: longest wait between two attempts, in seconds (also caps a server's Retry-After)
MAX_WAIT = 120.0
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}

SYSTEM_PROMPT = (
    "You write short visual descriptors of object categories for a vision-language model. "
    "Each descriptor names one thing that can be seen in a photo of the category. "
    "You answer with a JSON object only."
)


class ReplyError(ValueError):
    """A reply of the model that is not a usable list of descriptors."""


class _Retryable(Exception):
    """A transient failure (HTTP 429/5xx, timeout, lost connection); ``wait`` is the server's hint."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vlexplain/concepts`` (``~/.cache/vlexplain/concepts`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "vlexplain" / "concepts"


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


def read_classes(path: str | Path) -> list[str]:
    """Class names from a file or a dataset folder.

    Args:
        path: a text file with one class per line (blank lines and ``#`` comments ignored), a JSON
            list of names, a JSON object whose keys are the names (an existing concept set), a
            CUB-layout folder (``classes.txt``) or a folder of class sub-folders.

    Returns:
        The names in file order.

    Raises:
        InputError: a missing or empty source, or names that repeat (after :func:`normalize_name`).
    """
    p = Path(path)
    if p.is_dir():
        names = _folder_classes(p)
    elif p.is_file():
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"--classes {p}: not a UTF-8 text file") from None
        if text.lstrip().startswith(("[", "{")):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"--classes {p}: not valid JSON ({e})") from None
            if isinstance(raw, dict):
                raw = list(raw)
            if not isinstance(raw, list) or any(not isinstance(c, str) for c in raw):
                raise InputError(f"--classes {p}: a JSON class list must be a list of strings")
            names = [" ".join(c.split()) for c in raw]
        else:
            names = [" ".join(line.split()) for line in text.splitlines()]
            names = [n for n in names if not n.startswith("#")]
        names = [n for n in names if n]
    else:
        raise InputError(f"--classes {p}: not found (a text file with one class per line, a JSON list "
                         "or a dataset folder)")
    if not names:
        raise InputError(f"--classes {p}: no class names in it")
    seen: dict[str, str] = {}
    dups = []
    for n in names:
        key = normalize_name(n)
        if not key:
            raise InputError(f"--classes {p}: {n!r} is not a usable class name")
        if key in seen:
            dups.append(f"{seen[key]!r} / {n!r}")
        seen[key] = n
    if dups:
        raise InputError(f"--classes {p}: repeated class names: {', '.join(dups[:5])}")
    return names


def _folder_classes(root: Path) -> list[str]:
    from ..data.classes import cub_classes, folder_classes

    for base in (root, root / "CUB_200_2011"):
        if (base / "classes.txt").is_file():
            return cub_classes(base)
    try:
        return folder_classes(root)
    except InputError:
        raise InputError(f"--classes {root}: a folder with neither classes.txt nor class sub-folders") from None


def build_messages(cls: str, k: int, context: str | None = None, max_words: int = DEFAULT_MAX_WORDS) -> list[dict]:
    """The chat messages asking for the descriptors of one class."""
    about = f' (the categories are {context.strip()})' if context and context.strip() else ""
    user = (
        f'List {k} visual descriptors of the category "{cls}"{about} that help recognise it in a photo.\n'
        "Rules:\n"
        f"- each descriptor is a short phrase of 2 to 6 words (never more than {max_words}) naming something "
        "visible: a part, its colour, shape, size, texture or pattern, or a typical setting; for example "
        '"Long, pointed wings", "Red crest", "White lane markings", "Dense foliage";\n'
        "- the descriptors are visually distinct and do not overlap: each one is about a different part or "
        "property, so that each would light up a different region of the image;\n"
        "- do not repeat the category name, no full sentences, no numbering, no final period.\n"
        f'Answer with a JSON object of the form {{"descriptors": ["...", "..."]}} holding exactly {k} strings.'
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.S)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)])\s*")


def _load_json(text: str) -> Any:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for c in candidates:
        c = c.strip()
        for start, end in (("{", "}"), ("[", "]")):
            i, j = c.find(start), c.rfind(end)
            if i < 0 or j <= i:
                continue
            try:
                return json.loads(c[i : j + 1])
            except json.JSONDecodeError:
                pass
    raise ReplyError('the answer is not valid JSON; answer with {"descriptors": [...]} only')


def parse_descriptors(text: str, cls: str, k: int, max_words: int = DEFAULT_MAX_WORDS) -> list[str]:
    """Read the descriptors from a model's reply and check them.

    Accepts ``{"descriptors": [...]}`` (any single key holding a list will do) or a bare list, also
    inside a code fence; strips bullets, numbering and final periods; drops empty strings, repeats,
    descriptors of more than ``max_words`` words and descriptors that only repeat the class name;
    keeps the first ``k`` that are left.

    Returns:
        Exactly ``k`` descriptors.

    Raises:
        ReplyError: with a message fit to send back to the model, when fewer than ``k`` are usable.
    """
    obj = _load_json(text)
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        items = obj.get("descriptors")
        if not isinstance(items, list):
            items = lists[0] if len(lists) == 1 else None
    else:
        items = obj
    if not isinstance(items, list):
        raise ReplyError('the JSON must be an object {"descriptors": [...]} with a list of strings')
    out: list[str] = []
    seen: set[str] = set()
    dropped: list[str] = []
    cls_key = normalize_name(cls)
    for item in items:
        if not isinstance(item, str):
            dropped.append(f"{item!r} (not a string)")
            continue
        d = _BULLET.sub("", " ".join(item.split())).strip().rstrip(".").strip()
        key = _norm_descriptor(d)
        if not d:
            continue
        if key in seen:
            dropped.append(f"{d!r} (a repeat)")
        elif len(d.split()) > max_words:
            dropped.append(f"{d!r} (more than {max_words} words)")
        elif normalize_name(d) == cls_key:
            dropped.append(f"{d!r} (only the category name)")
        else:
            seen.add(key)
            out.append(d)
    if len(out) < k:
        why = f"; unusable: {', '.join(dropped[:4])}" if dropped else ""
        raise ReplyError(f"expected {k} usable descriptors, got {len(out)}{why}")
    return out[:k]


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
    text = body.decode("utf-8", "replace").strip()
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
    """Minimal OpenAI-compatible chat client (stdlib only) with retries and exponential backoff.

    Args:
        base_url: the OpenAI-style base URL (see :func:`chat_url`).
        model: the model name sent with each request.
        api_key: sent as ``Authorization: Bearer``; None or "" sends no header.
        timeout: seconds to wait for one reply.
        retries: further attempts after a 429, a 5xx, a timeout or a lost connection.
        backoff: first wait in seconds; doubled after each failure (capped at :data:`MAX_WAIT`);
            a ``Retry-After`` header takes precedence.
        sleep: the function that waits (tests pass a recorder).
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 1.0, sleep: Callable[[float], Any] = time.sleep) -> None:
        self.url = chat_url(base_url)
        self.model = model
        self.api_key = api_key or None
        self.timeout, self.retries, self.backoff, self.sleep = timeout, retries, backoff, sleep
        self.requests = 0
        handlers = [urllib.request.ProxyHandler({})] if is_loopback(self.url) else []
        self._opener = urllib.request.build_opener(*handlers)

    def complete(self, messages: list[dict], temperature: float = 0.0) -> str:
        """Send one chat request (retrying transient failures); returns the reply's text.

        Raises:
            InputError: an HTTP error other than 429/5xx (with the server's message), or a
                transient failure that persists after ``retries`` further attempts.
        """
        body = json.dumps({"model": self.model, "messages": messages, "temperature": temperature}).encode()
        attempt = 0
        while True:
            try:
                return self._post(body)
            except _Retryable as e:
                if attempt >= self.retries:
                    raise InputError(f"{self.url}: {e} (gave up after {attempt + 1} attempt(s))") from None
                wait = e.wait if e.wait is not None else self.backoff * 2**attempt
                self.sleep(min(wait, MAX_WAIT))
                attempt += 1

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.requests += 1
        try:
            with self._opener.open(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            msg = _server_message(e.read() or b"") or e.reason
            if e.code == 429 or e.code >= 500:
                raise _Retryable(f"HTTP {e.code}: {msg}", _retry_after(e.headers.get("Retry-After"))) from None
            hint = " (is the base URL right? most servers expect it to end in /v1)" if e.code == 404 else ""
            raise InputError(f"{self.url}: HTTP {e.code}: {msg}{hint}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise _Retryable(f"no answer ({reason or type(e).__name__})") from None
        try:
            reply = json.loads(raw)
            content = reply["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
            raise _Retryable(f"the server's answer is not a chat completion: {raw[:200]!r}") from None
        if not isinstance(content, str):
            raise _Retryable("the server's answer has no text content")
        return content


def _cache_key(url: str, model: str, cls: str, k: int, context: str | None, temperature: float, max_words: int) -> str:
    spec = {"url": url, "model": model, "class": cls, "k": k, "context": context or "", "temperature": temperature,
            "max_words": max_words, "prompt": PROMPT_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _cache_path(cache_dir: Path, key: str, cls: str) -> Path:
    slug = re.sub(r"[^0-9a-z]+", "-", cls.lower()).strip("-")[:40] or "class"
    return cache_dir / f"{slug}-{key}.json"


def _read_cache(path: Path, cls: str, k: int, max_words: int) -> list[str] | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        ds = entry["descriptors"]
        if entry.get("class") != cls or not isinstance(ds, list) or len(ds) != k:
            return None
        return parse_descriptors(json.dumps({"descriptors": ds}), cls, k, max_words)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged entry: ask again


def generate_concepts(
    classes: Sequence[str],
    base_url: str,
    model: str,
    k: int = 6,
    *,
    api_key_env: str = "OPENAI_API_KEY",
    require_key: bool | None = None,
    context: str | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    retries: int = 4,
    timeout: float = 60.0,
    temperature: float = 0.0,
    max_words: int = DEFAULT_MAX_WORDS,
    backoff: float = 1.0,
    sleep: Callable[[float], Any] = time.sleep,
    progress: bool = False,
    on_class: Callable[[str, list[str], bool], Any] | None = None,
) -> dict[str, list[str]]:
    """Ask a chat model for ``k`` descriptors per class.

    Args:
        classes: class names (see :func:`read_classes`); the keys of the result.
        base_url: OpenAI-style base URL, e.g. ``http://localhost:8000/v1`` (see :func:`chat_url`).
        model: model name on that server.
        k: descriptors per class (the published DEAL sets have 6 and use the first 5).
        api_key_env: environment variable holding the API key.
        require_key: whether a missing key is an error; None: required unless the server is on
            this machine (localhost).
        context: a few words on what the classes are ("bird species", "satellite images of land
            use"), added to the prompt.
        cache_dir: where replies are kept (default :func:`default_cache_dir`).
        use_cache: False ignores cached replies (new replies are still stored).
        retries: further attempts per request after a transient failure, and further requests per
            class after an unusable reply (the problem is sent back to the model).
        timeout: seconds to wait for one reply.
        temperature: sampling temperature sent with each request.
        max_words: longest descriptor accepted, in words.
        backoff: first wait after a transient failure, in seconds (doubled each time).
        sleep: the function that waits between attempts.
        progress: show a progress bar.
        on_class: called as ``on_class(name, descriptors, from_cache)`` after each class.

    Returns:
        ``{class: [k descriptors]}`` in the order of ``classes``; it passes
        :func:`vlexplain.concepts.sets.validate`.

    Raises:
        InputError: bad arguments, a missing key, an HTTP error the server will not recover from,
            a server that stays unreachable, or classes whose replies stayed unusable (the others
            are cached, so a rerun only asks for those).
    """
    if k < 1:
        raise InputError(f"--k must be at least 1, got {k}")
    if not 1 <= max_words <= MAX_WORDS:
        raise InputError(f"max_words must be between 1 and {MAX_WORDS}, got {max_words}")
    if not model.strip():
        raise InputError("--model: give the model name the server knows")
    names = [" ".join(c.split()) for c in classes]
    if not names or any(not c for c in names):
        raise InputError("no classes to generate descriptors for (or an empty class name)")
    if len({normalize_name(c) for c in names}) != len(names):
        raise InputError("class names repeat; each class must appear once")
    url = chat_url(base_url)
    key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
    if not key and (require_key if require_key is not None else not is_loopback(url)):
        raise InputError(f"no API key: set the environment variable {api_key_env or 'OPENAI_API_KEY'} "
                         "(or name another with --api-key-env; --no-key for servers that need none)")
    client = ChatClient(url, model, key, timeout=timeout, retries=retries, backoff=backoff, sleep=sleep)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    from ..viz.save import atomic_write_text

    out: dict[str, list[str]] = {}
    failed: list[str] = []
    bar = _progress(progress, len(names))
    try:
        for cls in names:
            path = _cache_path(cache, _cache_key(url, model, cls, k, context, temperature, max_words), cls)
            ds = _read_cache(path, cls, k, max_words) if use_cache else None
            cached = ds is not None
            if ds is None:
                try:
                    ds, raw = _ask(client, cls, k, context, temperature, max_words, retries)
                except ReplyError as e:
                    failed.append(f"{cls!r} ({e})")
                else:
                    entry = {"class": cls, "descriptors": ds, "model": model, "url": url, "k": k,
                             "prompt_version": PROMPT_VERSION, "reply": raw}
                    try:
                        atomic_write_text(path, json.dumps(entry, indent=1, ensure_ascii=False))
                    except OSError as e:
                        raise InputError(f"cannot write the cache {path}: {e}") from None
            if ds is not None:
                out[cls] = ds
                if on_class is not None:
                    on_class(cls, ds, cached)
            if bar is not None:
                bar[0].update(bar[1], advance=1, description=cls[:30])
    finally:
        if bar is not None:
            bar[0].stop()
    if failed:
        raise InputError(f"{len(failed)} class(es) got no usable descriptors after {retries + 1} request(s) each: "
                         f"{'; '.join(failed[:3])}{' ...' if len(failed) > 3 else ''}; the {len(out)} other(s) are "
                         "cached, so a rerun only asks again for these")
    return {c: list(d) for c, d in validate(out, f"from {model}", max_words).items()}


def _ask(client: ChatClient, cls: str, k: int, context: str | None, temperature: float, max_words: int,
         retries: int) -> tuple[list[str], str]:
    """Request descriptors of one class; an unusable reply is sent back with the problem stated."""
    messages = build_messages(cls, k, context, max_words)
    for attempt in range(retries + 1):
        text = client.complete(messages, temperature)
        try:
            return parse_descriptors(text, cls, k, max_words), text
        except ReplyError as e:
            if attempt == retries:
                raise
            messages = messages + [
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"That answer cannot be used: {e}. Answer again with a JSON object "
                                            f'{{"descriptors": [...]}} holding exactly {k} short, distinct descriptors.'},
            ]
    raise AssertionError("unreachable")


def _progress(show: bool, total: int):
    if not show:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("{task.description:<30}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 transient=True)
    task = p.add_task("concepts", total=total)
    p.start()
    return p, task
