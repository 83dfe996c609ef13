"""``vlexplain repair``: remove a model's reliance on a cue; write a model that loads as a spec."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError
from ._out import out_dir

REPAIR_DATA_HELP = (
    "spurious[:N] (the spurious testbed: for ablate_heads N audited scenes per group, default 64; for the "
    "fine-tuning methods N training scenes, default 3000) or a JSONL file: pairs with image, caption, "
    "cue_mask or cue_boxes (ablate_heads), or labelled images with image, label and cue_mask or cue_boxes "
    "(rrr; deal and control need neither)."
)


def register(app: typer.Typer) -> None:
    """Add the ``repair`` command."""

    @app.command("repair")
    def repair_cmd(
        model: str = typer.Option(..., "--model", "-m", help="The model to repair (see `vlexplain models`)."),
        method: str = typer.Option(..., "--method", help="ablate_heads, rrr, deal or control."),
        data: str = typer.Option(..., "--data", help=REPAIR_DATA_HELP),
        out: Path = typer.Option(
            ..., "--out", callback=out_dir, help="Output folder: the repaired model (loads as a model spec)."
        ),
        heads: int = typer.Option(3, "--heads", min=1, help="ablate_heads: how many top-ranked heads to ablate."),
        steps: int = typer.Option(300, "--steps", min=1, help="Fine-tuning: optimiser steps."),
        lr: float = typer.Option(1e-4, "--lr", help="Fine-tuning: AdamW learning rate."),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Fine-tuning: images per step."),
        lambda_rrr: float = typer.Option(1.0, "--lambda-rrr", min=0.0, help="rrr: weight of the explanation penalty."),
        explanation: str = typer.Option(
            "relevance",
            "--explanation",
            help="rrr: the explanation penalised on the cue: relevance (DEAL's, last block) or gradient (input "
            "gradients of the class log-probabilities, Ross et al.'s own).",
        ),
        lambda_sep: float = typer.Option(0.1, "--lambda-sep", help="deal: weight of the disentangle loss."),
        lambda_con: float = typer.Option(0.01, "--lambda-con", help="deal: weight of the localize loss."),
        concepts: Path | None = typer.Option(
            None, "--concepts", help="deal on your own data: a concept set (JSON or CSV)."
        ),
        freeze_text: bool = typer.Option(False, "--freeze-text", help="Fine-tuning: keep the text tower fixed."),
        freeze_image: bool = typer.Option(False, "--freeze-image", help="Fine-tuning: keep the image tower fixed."),
        p: float | None = typer.Option(
            None,
            "--p",
            min=0.0,
            max=1.0,
            help="spurious data: badge probability of the training scenes (default: the model's).",
        ),
        seed: int = typer.Option(0, "--seed", min=0, help="Data order (fine-tuning) or audited scenes (ablate_heads)."),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda (default: cuda when available)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Repair a model's shortcut with one of four methods; print the spec that loads the result."""
        from ..repair.checkpoint import check_out
        from ..repair.data import parse_count
        from ..repair.rrr import EXPLANATIONS
        from ..repair.run import METHODS, repair
        from .explain import load_model_cli

        if method not in METHODS:
            raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
        if explanation not in EXPLANATIONS:
            raise InputError(f"--explanation must be one of {', '.join(EXPLANATIONS)}, got {explanation!r}")
        check_out(out)
        if parse_count(data, "spurious", 1) is None and not Path(data).is_file():
            raise InputError(f"--data {data}: not found ({REPAIR_DATA_HELP})")
        m = load_model_cli(model, device)
        result = repair(
            m,
            method,
            data,
            out,
            concepts=concepts,
            progress=not no_progress,
            heads=heads,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            lambda_rrr=lambda_rrr,
            explanation=explanation,
            lambda_sep=lambda_sep,
            lambda_con=lambda_con,
            freeze_text=freeze_text,
            freeze_image=freeze_image,
            p=p,
            seed=seed,
        )
        if method == "ablate_heads":
            typer.echo(f"ablated heads (layer, head): {result.info['heads']}", err=True)
        typer.echo(result.spec)
