"""Tokens <-> characters of the text: spans given as substrings, words and content words.

Shown tokens are lower-cased pieces without tokenizer markers (``red``, ``double``, ``-``), so
each is found in the lower-cased text in order; a token that cannot be found there (``<unk>``)
takes the characters between its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputError

Span = str | int | Sequence[int]

#: words that name no region (function words); everything else with a letter or digit is content
STOPWORDS = frozenset(
    "a an the of on in at to and or with without by for from into onto over under near next is are was "
    "were be been being this that these those it its there here some any one two three four very".split()
)


def _lower(text: str) -> str:
    """Lower-case character by character, keeping the length (so offsets stay valid)."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def token_offsets(text: str, tokens: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) character offsets of each token in ``text``."""
    low = _lower(text)
    found: list[tuple[int, int] | None] = []
    cursor, prev_found = 0, True
    for tok in tokens:
        t = _lower(tok.strip())
        j = low.find(t, cursor) if t else -1
        # the gap before a token is blank, unless the token before it was not found
        if j >= 0 and (prev_found is False or not low[cursor:j].strip()):
            found.append((j, j + len(t)))
            cursor, prev_found = j + len(t), True
        else:
            found.append(None)
            prev_found = False
    out: list[tuple[int, int]] = []
    for i, f in enumerate(found):
        if f is not None:
            out.append(f)
            continue
        start = out[-1][1] if out else 0
        nxt = next((g for g in found[i + 1 :] if g is not None), None)
        end = nxt[0] if nxt is not None else len(text)
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        out.append((start, max(start, end)))
    return out


def span_tokens(text: str, tokens: Sequence[str], span: Span) -> list[int]:
    """Token indices of ``span``: a substring of ``text`` (case-insensitive, first occurrence) or
    token indices. Raises a one-line [`InputError`][vlexplain.InputError] when it names no token."""
    n = len(tokens)
    if isinstance(span, str):
        s = span.strip()
        if not s:
            raise InputError("the span is empty; give a part of the text or token indices")
        j = _lower(text).find(_lower(s))
        if j < 0:
            raise InputError(f"span {span!r} is not in the text {text!r}")
        lo, hi = j, j + len(s)
        idx = [i for i, (a, b) in enumerate(token_offsets(text, tokens)) if a < hi and b > lo]
        if not idx:
            raise InputError(f"span {span!r} covers no shown token of {text!r}")
        return idx
    items = [span] if isinstance(span, int) else list(span)
    if not items:
        raise InputError("the span is empty; give a part of the text or token indices")
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise InputError(f"token index {i!r} is out of range for {n} tokens")
    return sorted({i % n for i in items})


def words(text: str, tokens: Sequence[str]) -> list[tuple[str, list[int]]]:
    """The text's whitespace-separated words and the tokens each covers, in order."""
    offs = token_offsets(text, tokens)
    out: list[tuple[str, list[int]]] = []
    pos = 0
    for part in text.split():
        start = text.index(part, pos)
        end = pos = start + len(part)
        idx = [i for i, (a, b) in enumerate(offs) if a < end and b > start]
        if idx:
            out.append((part, idx))
    return out


def content_words(text: str, tokens: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Words that can name a region: a letter or digit, not a function word; punctuation trimmed."""
    out = []
    for w, idx in words(text, tokens):
        core = "".join(c for c in w if c.isalnum() or c in "-'")
        core = core.strip("-'")
        if core and any(c.isalnum() for c in core) and _lower(core) not in STOPWORDS:
            word = [any(c.isalnum() for c in tokens[i]) for i in idx]  # trim punctuation at the ends
            first, last = (
                word.index(True) if True in word else 0,
                len(word) - word[::-1].index(True) if True in word else len(word),
            )
            out.append((core, idx[first:last] or idx))
    return out
