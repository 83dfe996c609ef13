"""``vlexplain concepts generate``: concept sets from a chat model behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import InputError
from ._out import out_file


def register(app: typer.Typer) -> None:
    """Add the ``concepts`` command group."""
    concepts = typer.Typer(help="Concept sets: K short visual descriptors per class, for DEAL.", no_args_is_help=True)

    @concepts.command("generate")
    def generate_cmd(
        classes: Path = typer.Option(
            ..., "--classes", help="One class per line (# comments), a JSON list, or a dataset folder."
        ),
        base_url: str = typer.Option(
            ...,
            "--base-url",
            help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (requests go to <URL>/chat/completions).",
        ),
        model: str = typer.Option(..., "--model", "-m", help="Model name on that server."),
        k: int = typer.Option(6, "--k", min=1, max=50, help="Descriptors per class."),
        out: Path = typer.Option(
            Path("concepts.json"),
            "--out",
            "-o",
            callback=out_file,
            help="Output file: a JSON object, class -> list of descriptors.",
        ),
        api_key_env: str = typer.Option(
            "OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key."
        ),
        no_key: bool = typer.Option(
            False, "--no-key", help="Send no API key (a key is optional anyway for localhost)."
        ),
        context: str | None = typer.Option(
            None, "--context", help="What the classes are, e.g. 'bird species'; added to the prompt."
        ),
        cache: Path | None = typer.Option(
            None, "--cache", help="Reply cache folder (default ~/.cache/vlexplain/concepts)."
        ),
        refresh: bool = typer.Option(False, "--refresh", help="Ignore cached replies and ask again."),
        retries: int = typer.Option(
            4,
            "--retries",
            min=0,
            help="Further attempts after a 429/5xx error (one after a timeout) or an unusable reply.",
        ),
        timeout: float = typer.Option(
            60.0, "--timeout", min=0.1, help="Seconds one whole reply may take (a refused connection fails at once)."
        ),
        temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="Sampling temperature."),
        max_words: int = typer.Option(
            8, "--max-words", min=1, help="Longest descriptor accepted, in words (at most 12)."
        ),
        no_progress: bool = typer.Option(
            False, "--no-progress", help="Hide the progress bar (retries and slow replies are still reported)."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Say nothing about retries and slow replies."),
    ) -> None:
        """Ask a chat model for K short, visually distinct descriptors per class; writes a concept set.

        Finished classes are cached, so an interrupted run continues where it stopped when rerun.

        A class the server refuses or answers unusably is skipped; the failed ones are listed, exit code 2.
        """
        from ..concepts.generate import generate_concepts, read_classes
        from ..concepts.sets import load_concepts
        from ..viz.save import atomic_write_text

        names = read_classes(classes)
        if out.exists() and out.is_dir():
            raise InputError(f"--out {out} is a folder; give a file name such as concepts.json")
        counts = {"cached": 0, "asked": 0}

        def note(cls: str, ds: list[str], cached: bool) -> None:
            counts["cached" if cached else "asked"] += 1

        result = generate_concepts(
            names,
            base_url,
            model,
            k,
            api_key_env=api_key_env,
            require_key=False if no_key else None,
            context=context,
            cache_dir=cache,
            use_cache=not refresh,
            retries=retries,
            timeout=timeout,
            temperature=temperature,
            max_words=max_words,
            progress=not no_progress and not quiet,
            quiet=quiet,
            on_class=note,
        )
        try:
            atomic_write_text(out, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        except OSError as e:
            raise InputError(f"cannot write {out}: {e}") from None
        load_concepts(out, max_words=max_words)  # the file reads back as a valid concept set
        typer.echo(
            f"wrote {out}: {len(result)} classes x {k} descriptors "
            f"({counts['asked']} generated, {counts['cached']} from the cache)"
        )

    app.add_typer(concepts, name="concepts")
