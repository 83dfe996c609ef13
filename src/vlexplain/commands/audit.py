"""``vlexplain audit layers`` and ``vlexplain audit heads``: find where a model's shortcut shows."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import InputError
from ._out import out_dir

AUDIT_DATA_HELP = (
    "spurious[:N] (N testbed scenes per group, aligned and conflicting badges, with their badge-free "
    "counterfactuals; default 64) or a JSONL pairs file with image, caption, cue_mask (a PNG of the cue) "
    "or cue_boxes (COCO [x, y, w, h] pixel boxes) and optionally group, clean_image, reliance."
)


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise InputError(f"{what} must be non-negative numbers, got {text!r}")
    return vals


def _pairs(data: str, seed: int):
    from ..repair.data import audit_pairs

    return audit_pairs(data, seed)


def _write(out: Path | None, name: str, md: str, payload: dict) -> None:
    from ..eval.io import atomic_write

    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)

    def text(body: str):
        def write(tmp: str) -> None:
            Path(tmp).write_text(body)

        return write

    atomic_write(out / f"{name}.md", text(md))
    atomic_write(out / f"{name}.json", text(json.dumps(payload, indent=1)))


def register(app: typer.Typer) -> None:
    """Add the ``audit`` command group."""
    audit = typer.Typer(
        help="Audit a model's shortcut: where explanations see it, which heads carry it.", no_args_is_help=True
    )

    @audit.command("layers")
    def layers_cmd(
        model: str = typer.Option(..., "--model", "-m", help="The model audited (see `vlexplain models`)."),
        data: str = typer.Option(..., "--data", help=AUDIT_DATA_HELP),
        reference: str | None = typer.Option(
            None,
            "--reference",
            help="A model that does not use the cue (e.g. testbed:shapes), for the paired difference.",
        ),
        methods: str = typer.Option("m2ib,gradcam", "--methods", help="Comma-separated: m2ib, m2ib_fast, gradcam."),
        layers: str | None = typer.Option(None, "--layers", help="Comma-separated image blocks (default: all)."),
        betas: str = typer.Option("0.1,1,3,10", "--betas", help="Comma-separated M2IB betas."),
        seed: int = typer.Option(0, "--seed", min=0, help="Selects testbed scenes and seeds the explanations."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Pairs explained together."),
        out: Path | None = typer.Option(
            None, "--out", callback=out_dir, help="Also write layers.md and layers.json here."
        ),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda (default: cuda when available)."),
    ) -> None:
        """Sweep M2IB's layer and beta and Grad-CAM's layer; print where each sees the cue (Markdown)."""
        from ..repair.audit_layers import settings, sweep_layers
        from .explain import load_model_cli

        names = [m.strip() for m in methods.split(",") if m.strip()]
        lays, bets = _ints(layers, "--layers"), _floats(betas, "--betas")
        pairs = _pairs(data, seed)
        m = load_model_cli(model, device)
        settings(m, names, lays, bets)  # bad settings are refused before any work
        ref = load_model_cli(reference, device) if reference else None
        sweep = sweep_layers(m, pairs, ref, names, lays, bets, seed=seed, batch_size=batch_size)
        md = sweep.markdown()
        _write(out, "layers", md, sweep.to_dict())
        typer.echo(md)

    @audit.command("heads")
    def heads_cmd(
        model: str = typer.Option(..., "--model", "-m", help="The model audited (a ViT image tower)."),
        data: str = typer.Option(..., "--data", help=AUDIT_DATA_HELP),
        seed: int = typer.Option(0, "--seed", min=0, help="Selects the testbed scenes."),
        top: int | None = typer.Option(None, "--top", min=1, help="Show only the top N heads."),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images decomposed together."),
        out: Path | None = typer.Option(
            None, "--out", callback=out_dir, help="Also write heads.md and heads.json here."
        ),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda (default: cuda when available)."),
    ) -> None:
        """Rank the image tower's heads by how much their part of the score rises when the cue is present."""
        from ..repair.heads import audit_heads, check_heads
        from .explain import load_model_cli

        pairs = _pairs(data, seed)
        m = load_model_cli(model, device)
        check_heads(m, [])
        result = audit_heads(m, pairs, batch_size=batch_size)
        md = result.markdown(top)
        _write(out, "heads", md, result.to_dict())
        typer.echo(md)

    app.add_typer(audit, name="audit")
