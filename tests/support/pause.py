"""Run ``vlexplain`` in a subprocess that stops at a known point, so that a test signals it there.

``python tests/support/pause.py MODULE:FUNCTION N READY ARGS...`` runs ``vlexplain ARGS`` with
``MODULE.FUNCTION`` wrapped: its first ``N`` calls run as usual; the next one writes the file
``READY`` and waits for a signal. A test that waits for ``READY`` and then signals the process finds
exactly ``N`` calls finished, however fast or slow the machine is (no sleeps, no guessing how far a
run got). The function must be called outside ``vlexplain.interrupt.atomic`` blocks (a signal inside
one is held until the block ends).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path


def pause_command(target: str, n: int, ready: str | os.PathLike) -> list[str]:
    """The command-line prefix of a paused ``vlexplain`` (append the command's arguments)."""
    return [sys.executable, str(Path(__file__).resolve()), target, str(n), str(ready)]


def _wrap(target: str, n: int, ready: Path) -> None:
    module, _, name = target.partition(":")
    mod = importlib.import_module(module)
    original = getattr(mod, name)
    calls = [0]

    def paused(*args, **kwargs):
        calls[0] += 1
        if calls[0] > n:  # (the file says which heavy libraries the process has imported by now)
            ready.write_text(" ".join(m for m in ("torch", "transformers") if m in sys.modules) or "-")
            while True:  # the signal handler raises; nothing else ends the wait
                signal.pause()
        return original(*args, **kwargs)

    setattr(mod, name, paused)


def main(argv: list[str]) -> int:
    target, n, ready, *args = argv
    _wrap(target, int(n), Path(ready))
    from vlexplain.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
