"""The ``vlexplain`` command line (typer). Subcommands live in ``vlexplain.commands``.

Every subcommand is a thin wrapper around the public API. Errors a user can fix print one line and
exit with code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import warnings

import typer

app = typer.Typer(
    name="vlexplain",
    help="Explain CLIP-family vision-language models: which pixels and which words make an image and a text match.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_DEBUG = {"on": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _DEBUG["on"] = debug


def _register_commands() -> None:
    from . import commands

    for m in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{commands.__name__}.{m.name}")
        if hasattr(mod, "register"):
            mod.register(app)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the terminal as one line each: ``warning: MESSAGE`` (no file, line or source)."""
    try:
        (file or sys.stderr).write(f"warning: {message}\n")
    except (OSError, ValueError):  # a closed stream
        pass


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.showwarning = _one_line_warning
    # (transformers reads these variables when a command imports it: nothing heavy is imported
    # before the arguments are parsed, so --help and usage errors answer at once; when main() runs
    # in a process that has imported it already, it is told directly)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code.

    Ctrl-C (SIGINT) and SIGTERM end any command the same way: finished work is kept, one line says
    what was done and how to continue, and the code is 128 + the signal (130, 143).
    """
    from . import interrupt

    with interrupt.catch_signals() as caught:
        try:
            code = _main(argv)
        except KeyboardInterrupt:  # also while the commands load
            code = 130
        if caught.signum is not None or code == 130:  # typer returns 130 for a KeyboardInterrupt
            typer.echo(interrupt.message(), err=True)
            return interrupt.exit_code(caught.signum)
        return code


def _main(argv: list[str] | None) -> int:
    from .errors import VlexplainError

    _quiet_libraries()
    _register_commands()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = app(args=argv, standalone_mode=False)  # a command's typer.Exit code, or its return value
    except VlexplainError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        return 2
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:  # click usage errors and the like
        usage, abort = _click_exceptions()
        if isinstance(e, usage):
            e.show()  # type: ignore[attr-defined]  # click usage errors name the option and its range
            return 2
        if isinstance(e, abort):
            return 1
        if debug:
            raise
        typer.echo(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", err=True)
        return 1
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Click's usage-error and abort classes, and those of the click copy newer typer versions carry."""
    import click

    modules = [click.exceptions]
    try:
        from typer._click import exceptions as vendored  # typer >= 0.2x parses with its own click copy
    except ImportError:
        pass
    else:
        modules.append(vendored)

    def found(name: str) -> tuple[type, ...]:
        return tuple(getattr(m, name) for m in modules if hasattr(m, name))

    return found("ClickException"), found("Abort")


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
