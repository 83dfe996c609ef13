"""Reading users' files: one guard for every input file, and messages that say what is wrong.

``check_input_file`` is the first step of every read of a user's file (images, masks, data and
concept files): a missing file, a broken link, a symbolic-link loop, a folder, a FIFO or device, an
empty or unreadable file each get their own one-line [`InputError`][vlexplain.InputError] instead
of a message about something else (a FIFO is not "empty", a link loop is not "not found"), and
nothing ever blocks on a FIFO. ``utf8_errors`` turns a text file's invalid UTF-8 into a message
with the line and column; ``shown_name`` makes any file name safe to print and to write into HTML.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def shown_name(path: str | os.PathLike) -> str:
    """``path`` as text that can be printed and written as UTF-8: bytes that are not UTF-8 (kept by
    Python as lone surrogates) become U+FFFD."""
    s = os.fspath(path)
    if isinstance(s, bytes):
        return s.decode("utf-8", "replace")
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no file system produced: replace each one
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


def _short(path: str | os.PathLike, n: int = 120) -> str:
    s = shown_name(path)
    return s if len(s) <= n else s[: n // 2] + "\u2026" + s[-n // 2 :]


def check_input_file(path: str | os.PathLike, what: str = "image") -> Path:
    """``path`` if it is a regular, readable, non-empty file; else an InputError saying why.

    Args:
        path: the file.
        what: the word for it in messages ("image", "mask", "data file"...).
    """
    p = Path(path)
    name = _short(p)
    try:
        st = p.stat()  # follows links
    except OSError as e:
        code = e.errno
        if code == errno.ELOOP:
            raise InputError(f"{what} {name}: a loop of symbolic links (a link that points back to itself)") from None
        if code == errno.ENOENT and p.is_symlink():
            raise InputError(f"{what} {name}: a broken symbolic link (to {_short(os.readlink(p))})") from None
        if code == errno.ENOENT:
            raise InputError(f"{what} not found: {name}") from None
        if code == errno.ENAMETOOLONG:
            raise InputError(f"{what} {name}: the file name is too long for this system") from None
        if code == errno.ENOTDIR:
            raise InputError(f"{what} not found: {name} (a part of the path is a file, not a folder)") from None
        if code == errno.EACCES:
            raise InputError(f"cannot read {what} {name}: permission denied") from None
        raise InputError(f"cannot read {what} {name}: {os.strerror(code) if code else e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"expected {'an' if what[:1] in 'aeiou' else 'a'} {what} file, got a directory: {name}")
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise InputError(f"{what} {name} is {kind}, not a regular file; copy it to a file first")
    if st.st_size == 0:
        raise InputError(f"{what} is empty (0 bytes): {name}")
    if not os.access(p, os.R_OK):
        raise InputError(f"cannot read {what} {name}: permission denied")
    return p


def utf8_error_location(path: str | os.PathLike) -> str:
    """``"line L, column C (byte 0xXX)"`` of the first invalid UTF-8 in a file ("" if none is found)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                col = len(raw[: e.start].decode("utf-8", "replace")) + 1
                return f"line {lineno}, column {col} (byte 0x{raw[e.start]:02x})"
    return ""


@contextmanager
def utf8_errors(path: str | os.PathLike, what: str = "file") -> Iterator[None]:
    """Turn a UnicodeDecodeError while reading ``path`` as text into an InputError with its line."""
    try:
        yield
    except UnicodeDecodeError:
        where = utf8_error_location(path)
        raise InputError(
            f"{_short(path)}: not valid UTF-8 text{' at ' + where if where else ''}; save the {what} as UTF-8"
        ) from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of a user's file (a BOM is dropped), through ``check_input_file`` and ``utf8_errors``."""
    p = check_input_file(path, what)
    with utf8_errors(p, what):
        return p.read_text(encoding="utf-8-sig")
