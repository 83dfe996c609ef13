"""Interrupting long runs: Ctrl-C (SIGINT) and SIGTERM end a command cleanly and keep finished work.

A long loop reports what it has finished into a ``track`` context; the command line installs
``catch_signals``, and an interruption prints one line built from the loop's last report and
exits with ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM)::

    with track("pairs", total=64, done=16, resume="rerun with --resume") as work:
        for batch in batches:
            ...
            work.advance(len(batch))
    # Ctrl-C -> "interrupted; 24 of 64 pairs done, rerun with --resume"

Both signals raise ``Interrupted``, a ``KeyboardInterrupt``, so ``finally`` blocks and
``except KeyboardInterrupt`` clean-ups (a checkpoint written on the way out) run for either.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGINT or SIGTERM arrives; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(eq=False)  # identity: two loops with equal counts are still two loops
class Work:
    """What a long loop has finished so far (read when an interruption is reported).

    Attributes:
        what: the unit, plural ("pairs", "classes", "steps").
        total: how many there are in all (None: open-ended, e.g. a time budget).
        done: how many are finished and kept (earlier runs included).
        resume: how to continue, e.g. "rerun with --resume" (None: nothing to resume).
    """

    what: str
    total: int | None = None
    done: int = 0
    resume: str | None = "rerun with --resume"

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more finished units."""
        self.done += n

    def describe(self) -> str:
        """``"3 of 8 pairs done, rerun with --resume"``."""
        count = f"{self.done} of {self.total}" if self.total is not None else f"{self.done}"
        return f"{count} {self.what} done" + (f", {self.resume}" if self.resume else "")


@dataclass
class _State:
    stack: list[Work] = field(default_factory=list)  # the loops running now, outermost first
    signum: int | None = None  # the first signal caught under catch_signals
    seen: list[Work] = field(default_factory=list)  # the stack when that signal arrived
    held: int = 0  # depth of atomic() blocks: a signal inside one waits for its end
    pending: int | None = None  # the signal held back by atomic()


_STATE = _State()


@contextmanager
def track(
    what: str, total: int | None = None, *, done: int = 0, resume: str | None = "rerun with --resume"
) -> Iterator[Work]:
    """Report a long loop's progress for the interruption message (see the module docstring)."""
    work = Work(what, total, done, resume)
    _STATE.stack.append(work)
    try:
        yield work
    finally:
        _STATE.stack.remove(work)


@contextmanager
def on_interrupt(keep: Callable[[], object]) -> Iterator[None]:
    """Call ``keep()`` (save what is finished) when an interruption leaves the block, then re-raise."""
    try:
        yield
    except KeyboardInterrupt:
        with atomic():  # a second Ctrl-C waits for the save
            keep()
        raise


def _handler(signum: int, frame: object) -> None:
    if _STATE.signum is None:
        _STATE.signum = signum
        _STATE.seen = list(_STATE.stack)
    if _STATE.held:
        _STATE.pending = signum
        return
    raise Interrupted(signum)


@contextmanager
def atomic() -> Iterator[None]:
    """Hold SIGINT / SIGTERM back until the block ends (an optimiser step, a counter and its file).

    An interruption then never leaves half-updated weights: it is raised right after the block.
    """
    _STATE.held += 1
    try:
        yield
    finally:
        _STATE.held -= 1
        if not _STATE.held and _STATE.pending is not None:
            signum, _STATE.pending = _STATE.pending, None
            raise Interrupted(signum)


@contextmanager
def catch_signals() -> Iterator[_State]:
    """Turn SIGINT and SIGTERM into ``Interrupted`` while the block runs (main thread only).

    The previous handlers are restored on exit. Yields the state whose ``signum`` tells whether a
    signal arrived (reset on entry).
    """
    _STATE.signum, _STATE.seen, _STATE.pending = None, [], None
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            previous[s] = signal.signal(s, _handler)
    try:
        yield _STATE
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def exit_code(signum: int | None) -> int:
    """The shell's code for a run ended by ``signum``: 128 + the signal (SIGINT when None)."""
    return 128 + int(signum if signum is not None else signal.SIGINT)


def message() -> str:
    """The one line an interruption prints: the innermost loop with a report, if any."""
    name = "terminated" if _STATE.signum == signal.SIGTERM else "interrupted"
    for work in reversed(_STATE.seen):
        return f"{name}; {work.describe()}"
    return name
