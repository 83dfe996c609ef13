"""typer callbacks for ``--out`` options (see ``vlexplain.outdir``) and the names of the files a
command writes there."""

from __future__ import annotations

import re
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


def slug(s: str, n: int = 40) -> str:
    """A file-name-safe, lower-case form of ``s`` of at most ``n`` characters."""
    return re.sub(r"[^a-zA-Z0-9]+", "-", s).strip("-").lower()[:n] or "text"


def pair_prefix(k: int, image_name: str, text: str) -> str:
    """The file-name prefix of the ``k``-th pair's outputs (explanations and interactions alike)."""
    return f"{k:03d}_{slug(Path(image_name).stem, 24)}_{slug(text)}"
