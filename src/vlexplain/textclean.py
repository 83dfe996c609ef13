"""Checking and cleaning the texts to explain: control characters and texts with nothing visible."""

from __future__ import annotations

import unicodedata
import warnings

from .errors import InputError

_WHITESPACE_CONTROLS = frozenset("\t\n\r\x0b\x0c")  # control characters that are ordinary whitespace
_INVISIBLE = frozenset(("Cc", "Cf", "Cs", "Zs", "Zl", "Zp"))  # controls, format characters, surrogates, spaces


def _is_control(c: str) -> bool:
    return unicodedata.category(c) == "Cc" and c not in _WHITESPACE_CONTROLS


def _visible(c: str) -> bool:
    return not c.isspace() and unicodedata.category(c) not in _INVISIBLE


def preview(text: str, words: int = 8, chars: int = 60) -> str:
    """The first words of a text (for messages), with an ellipsis when it goes on."""
    parts = text.split()
    head = " ".join(parts[:words])
    if len(head) > chars:
        head = head[:chars].rstrip()
    return head + (" \u2026" if head != " ".join(parts) else "")


def clean_text(text: object) -> str:
    """``text`` without its control characters (a warning says which were removed).

    Tabs and line breaks are whitespace and stay. Raises [`InputError`][vlexplain.InputError] for a non-string and
    for a text without a visible character once control characters, format characters (such as
    zero-width spaces) and whitespace are set aside, e.g. ``"\\x00\\x00"`` or ``" \\u200b "``.
    """
    if not isinstance(text, str):
        raise InputError(f"texts must be strings, got {type(text).__name__}")
    if any(unicodedata.category(c) == "Cs" for c in text):  # bytes that were not UTF-8 (a terminal's other encoding)
        shown = "".join("\ufffd" if unicodedata.category(c) == "Cs" else c for c in text)
        raise InputError(
            f"the text {preview(shown)!r} is not valid UTF-8 (an undecodable byte, shown as \ufffd); "
            "type it again in a UTF-8 terminal or fix the file it came from"
        )
    bad = sorted({c for c in text if _is_control(c)})
    out = "".join(c for c in text if not _is_control(c)) if bad else text
    if not any(_visible(c) for c in out):
        raise InputError(f"empty text {text[:40]!r}: every text must contain at least one visible character")
    if bad:
        codes = ", ".join(f"U+{ord(c):04X}" for c in bad)
        warnings.warn(f"removed control characters ({codes}) from the text {preview(out)!r}", stacklevel=2)
    return out


def clean_texts(texts: list[str]) -> list[str]:
    """``clean_text`` of every text."""
    return [clean_text(t) for t in texts]
