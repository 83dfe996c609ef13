"""typer callbacks for ``--out`` options (see ``vlexplain.outdir``)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..outdir import check_out_dir, check_out_file, claim


def out_dir(ctx: typer.Context, value: Path | None) -> Path | None:
    """A folder ``--out``: checked (not a file, writable), then claimed until the command ends."""
    if value is None or ctx.resilient_parsing:
        return value
    p = check_out_dir(value)
    ctx.call_on_close(claim(p).release)
    return p


def out_file(ctx: typer.Context, value: Path | None) -> Path | None:
    """A file ``--out``: not a folder, in a place that can be written."""
    if value is None or ctx.resilient_parsing:
        return value
    return check_out_file(value)
