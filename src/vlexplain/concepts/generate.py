"""Generate concept sets with a language model behind an OpenAI-compatible chat endpoint.

For every class one chat request asks for ``k`` short, visual, mutually distinct descriptors
(``{"descriptors": ["Long, pointed wings", ...]}``); the reply is parsed (code fences tolerated),
checked and, when it does not pass, asked again with the problem stated. Replies are cached on disk
per (endpoint, model, class, k, prompt), so a rerun or a run resumed after an interruption makes no
request for the classes already done::

    concepts = generate_concepts(["Cardinal", "Blue Jay"], "http://localhost:8000/v1", "llama3")
    # {'Cardinal': ['Red crest', 'Black face mask', ...], 'Blue Jay': [...]}

The base URL is what an OpenAI client takes as ``base_url`` (see ``vlexplain.concepts.chat.chat_url``).
Class names may be in any script: they are matched after NFKC normalisation and case folding
(``vlexplain.concepts.sets.normalize_name``), and cache files are named by a readable slug plus
a short hash, so "Pâté" and "Pât", or "Сорока" and "北京鸭", stay apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..interrupt import track
from .chat import ChatClient, RequestError, chat_url, is_loopback, stderr_notify
from .sets import MAX_WORDS, _norm_descriptor, normalize_name, validate

#: bump when the prompt changes, so cached replies of an older prompt are not reused
PROMPT_VERSION = 1
#: longest descriptor accepted from the model, in words (the published sets use 2-6)
DEFAULT_MAX_WORDS = 8
#: characters of a bad answer sent back with a re-ask, and of a reply kept in the cache
REASK_EXCERPT = 1000
CACHE_EXCERPT = 2000

SYSTEM_PROMPT = (
    "You write short visual descriptors of object categories for a vision-language model. "
    "Each descriptor names one thing that can be seen in a photo of the category. "
    "You answer with a JSON object only."
)


class ReplyError(ValueError):
    """A reply of the model that is not a usable list of descriptors."""


class GenerationError(InputError):
    """Some classes got no descriptors; ``failed`` maps each to the reason (the others are cached)."""

    def __init__(self, message: str, failed: dict[str, str]) -> None:
        super().__init__(message)
        self.failed = failed


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vlexplain/concepts`` (``~/.cache/vlexplain/concepts`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "vlexplain" / "concepts"


def read_classes(path: str | Path) -> list[str]:
    """Class names from a file or a dataset folder.

    Args:
        path: a text file with one class per line (blank lines and ``#`` comments ignored), a JSON
            list of names, a JSON object whose keys are the names (an existing concept set), a
            CUB-layout folder (``classes.txt``) or a folder of class sub-folders.

    Returns:
        The names in file order.

    Raises:
        InputError: a missing or empty source, or names that repeat (after ``normalize_name``).
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
        raise InputError(
            f"--classes {p}: not found (a text file with one class per line, a JSON list or a dataset folder)"
        )
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
    about = f" (the categories are {context.strip()})" if context and context.strip() else ""
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
_LIST_LINE = re.compile(r"^\s*(?:[-*+\u2022\u2013]|\d{1,3}[.)])\s+\S")  # a Markdown list item
_MARKUP = re.compile(r"^(\*\*|__|\*|_|`|\"|')(.+)\1$")


def excerpt(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters, saying how much was cut."""
    return text if len(text) <= n else f"{text[:n]} [... {len(text) - n} more characters cut]"


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
    items = _markdown_list(text)
    if items is not None:
        return items
    raise ReplyError(
        "the answer is not valid JSON (nor a Markdown list with one descriptor on every line); "
        'answer with {"descriptors": [...]} only'
    )


def _markdown_list(text: str) -> list[str] | None:
    """The items of a reply that is a Markdown list and nothing else (a fenced one too), else None."""
    fenced = _FENCE.fullmatch(text.strip())
    lines = [ln for ln in (fenced.group(1) if fenced else text).splitlines() if ln.strip()]
    if not lines or not all(_LIST_LINE.match(ln) for ln in lines):
        return None
    items = []
    for ln in lines:
        item = _BULLET.sub("", ln).strip()
        while (m := _MARKUP.match(item)) is not None:  # **bold**, `code`, "quoted"
            item = m.group(2).strip()
        items.append(item)
    return items


def _short(d: str, n: int = 60) -> str:
    return repr(d if len(d) <= n else d[:n] + "...")


def parse_descriptors(text: str, cls: str, k: int, max_words: int = DEFAULT_MAX_WORDS) -> list[str]:
    """Read the descriptors from a model's reply and check them.

    Accepts ``{"descriptors": [...]}`` (any single key holding a list will do) or a bare list, also
    inside a code fence, or a Markdown list whose every line is a descriptor; strips bullets,
    numbering and final periods; drops empty strings, repeats, descriptors of more than
    ``max_words`` words and descriptors that only repeat the class name; keeps the first ``k``.

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
            dropped.append(f"{_short(str(item))} (not a string)")
            continue
        d = _BULLET.sub("", " ".join(item.split())).strip().rstrip(".").strip()
        key = _norm_descriptor(d)
        if not d:
            continue
        if key in seen:
            dropped.append(f"{_short(d)} (a repeat)")
        elif len(d.split()) > max_words:
            dropped.append(f"{_short(d)} (more than {max_words} words)")
        elif normalize_name(d) == cls_key:
            dropped.append(f"{_short(d)} (only the category name)")
        else:
            seen.add(key)
            out.append(d)
    if len(out) < k:
        why = f"; unusable: {', '.join(dropped[:4])}" if dropped else ""
        raise ReplyError(f"expected {k} usable descriptors, got {len(out)}{why}")
    return out[:k]


def _cache_key(url: str, model: str, cls: str, k: int, context: str | None, temperature: float, max_words: int) -> str:
    spec = {
        "url": url,
        "model": model,
        "class": cls,
        "k": k,
        "context": context or "",
        "temperature": temperature,
        "max_words": max_words,
        "prompt": PROMPT_VERSION,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def cache_slug(cls: str, n: int = 40) -> str:
    """A readable, file-system-safe part of a cache file name: letters and digits of any script.

    NFKC and case folding as in ``normalize_name``; everything else becomes ``-``. The hash
    that follows it in the file name keeps names apart that share a slug.
    """
    name = unicodedata.normalize("NFKC", cls).casefold()
    kept = "".join(c if unicodedata.category(c)[0] in "LN" else "-" for c in name)
    return re.sub(r"-+", "-", kept).strip("-")[:n] or "class"


def _cache_path(cache_dir: Path, key: str, cls: str) -> Path:
    return cache_dir / f"{cache_slug(cls)}-{key}.json"


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
    quiet: bool = False,
    notify: Callable[[str], Any] | None = None,
    notice_after: float = 10.0,
    on_class: Callable[[str, list[str], bool], Any] | None = None,
) -> dict[str, list[str]]:
    """Ask a chat model for ``k`` descriptors per class.

    Args:
        classes: class names (see ``read_classes``); the keys of the result.
        base_url: OpenAI-style base URL, e.g. ``http://localhost:8000/v1`` (see ``chat_url``).
        model: model name on that server.
        k: descriptors per class (the published DEAL sets have 6 and use the first 5).
        api_key_env: environment variable holding the API key.
        require_key: whether a missing key is an error; None: required unless the server is on
            this machine (localhost).
        context: a few words on what the classes are ("bird species"), added to the prompt.
        cache_dir: where replies are kept (default ``default_cache_dir``).
        use_cache: False ignores cached replies (new replies are still stored).
        retries: further attempts per request after a 429 / 5xx / lost connection (one after a
            timeout), and further requests per class after an unusable reply.
        timeout: seconds one whole reply may take (a connection refused fails at once).
        temperature: sampling temperature sent with each request.
        max_words: longest descriptor accepted, in words.
        backoff: first wait after a transient failure, in seconds (doubled each time).
        sleep: the function that waits between attempts.
        progress: show a progress bar.
        quiet: say nothing about retries and slow replies.
        notify: where those lines go (default: stderr, or above the progress bar).
        notice_after: seconds a reply may take before a line says what is awaited.
        on_class: called as ``on_class(name, descriptors, from_cache)`` after each class.

    Returns:
        ``{class: [k descriptors]}`` in the order of ``classes``; it passes
        ``vlexplain.concepts.sets.validate``.

    Raises:
        GenerationError: classes whose requests were refused (HTTP 400/413/422) or whose replies
            stayed unusable; every other class was asked and cached first.
        InputError: bad arguments, a missing key, or a server that cannot be used (connection
            refused, HTTP 401/404, failures that persist); finished classes stay cached.
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
        raise InputError(
            f"no API key: set the environment variable {api_key_env or 'OPENAI_API_KEY'} "
            "(or name another with --api-key-env; --no-key for servers that need none)"
        )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    bar = _progress(progress, len(names))
    say = None if quiet else notify or (_bar_notify(bar[0]) if bar is not None else stderr_notify)
    client = ChatClient(
        url,
        model,
        key,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        sleep=sleep,
        notify=say,
        notice_after=notice_after,
    )
    out: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    resume = "rerun the same command (finished classes are cached)"
    try:
        with track("classes", len(names), resume=resume) as work:
            for cls in names:
                path = _cache_path(cache, _cache_key(url, model, cls, k, context, temperature, max_words), cls)
                ds = _read_cache(path, cls, k, max_words) if use_cache else None
                cached = ds is not None
                if ds is None:
                    ds = _generate_one(client, cls, k, context, temperature, max_words, retries, path, failed, say)
                if ds is not None:
                    out[cls] = ds
                    work.advance()
                    if on_class is not None:
                        on_class(cls, ds, cached)
                if bar is not None:
                    bar[0].update(bar[1], advance=1, description=cls[:30])
    finally:
        if bar is not None:
            bar[0].stop()
    if failed:
        shown = "; ".join(f"{c!r} ({r})" for c, r in list(failed.items())[:10])
        more = f"; and {len(failed) - 10} more" if len(failed) > 10 else ""
        raise GenerationError(
            f"{len(failed)} of {len(names)} class(es) got no descriptors: {shown}{more}; the "
            f"{len(out)} other(s) are cached, so a rerun only asks again for these",
            failed,
        )
    return {c: list(d) for c, d in validate(out, f"from {model}", max_words).items()}


def _generate_one(
    client: ChatClient,
    cls: str,
    k: int,
    context: str | None,
    temperature: float,
    max_words: int,
    retries: int,
    path: Path,
    failed: dict[str, str],
    say: Callable[[str], Any] | None,
) -> list[str] | None:
    """Ask for one class and cache the answer; a refused request or unusable replies fail only this class."""
    from ..viz.save import atomic_write_text

    try:
        ds, raw = _ask(client, cls, k, context, temperature, max_words, retries)
    except (ReplyError, RequestError) as e:
        failed[cls] = str(e) if isinstance(e, RequestError) else f"{e}, after {retries + 1} request(s)"
        if say is not None:
            say(f"{cls}: no descriptors ({failed[cls]}); going on with the other classes")
        return None
    entry = {
        "class": cls,
        "descriptors": ds,
        "model": client.model,
        "url": client.url,
        "k": k,
        "prompt_version": PROMPT_VERSION,
        "reply_excerpt": excerpt(raw, CACHE_EXCERPT),
        "reply_chars": len(raw),
    }
    try:
        atomic_write_text(path, json.dumps(entry, indent=1, ensure_ascii=False))
    except OSError as e:
        raise InputError(f"cannot write the cache {path}: {e}") from None
    return ds


def _ask(
    client: ChatClient, cls: str, k: int, context: str | None, temperature: float, max_words: int, retries: int
) -> tuple[list[str], str]:
    """Request descriptors of one class; an unusable reply is sent back (cut short) with the problem stated.

    Each re-ask carries only the last bad answer, so a huge bad reply does not grow every later request.
    """
    base = build_messages(cls, k, context, max_words)
    messages = base
    for attempt in range(retries + 1):
        text = client.complete(messages, temperature, label=cls)
        try:
            return parse_descriptors(text, cls, k, max_words), text
        except ReplyError as e:
            if attempt == retries:
                raise
            client.say(f"{cls}: unusable answer ({e}); asking again ({attempt + 2} of {retries + 1})")
            messages = base + [
                {"role": "assistant", "content": excerpt(text, REASK_EXCERPT)},
                {
                    "role": "user",
                    "content": f"That answer cannot be used: {e}. Answer again with a JSON object "
                    f'{{"descriptors": [...]}} holding exactly {k} short, distinct descriptors.',
                },
            ]
    raise AssertionError("unreachable")


def _bar_notify(bar: Any) -> Callable[[str], None]:
    def say(message: str) -> None:  # printed above the bar
        bar.console.print(message, markup=False, highlight=False, soft_wrap=True)

    return say


def _progress(show: bool, total: int):
    if not show:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(
        TextColumn("{task.description:<30}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    )
    task = p.add_task("concepts", total=total)
    p.start()
    return p, task
