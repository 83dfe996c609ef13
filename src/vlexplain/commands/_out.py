"""typer callbacks for ``--out`` options (see ``vlexplain.outdir``). A command claims its folder
itself (``vlexplain.outdir.claimed``) once its inputs are validated."""

from __future__ import annotations

from pathlib import Path

import typer

from ..outdir import check_out_dir, check_out_file


def out_dir(ctx: typer.Context, value: Path | None) -> Path | None:
    """A folder ``--out``: checked (not a file, writable); nothing is created or claimed here."""
    if value is None or ctx.resilient_parsing:
        return value
    return check_out_dir(value)


def out_file(ctx: typer.Context, value: Path | None) -> Path | None:
    """A file ``--out``: not a folder, in a place that can be written."""
    if value is None or ctx.resilient_parsing:
        return value
    return check_out_file(value)
