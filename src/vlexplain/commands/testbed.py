"""``vlexplain testbed``: the ground-truth testbeds (train and evaluate the shapes-world CLIP)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError
from ._out import out_dir

ACTIVATIONS = ("gelu", "relu", "quick_gelu")  # MLP activations offered for the shapes-world CLIP


def _cores() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(2, n))


def register(app: typer.Typer) -> None:
    """Add the ``testbed`` sub-app to the main CLI."""
    sub = typer.Typer(help="Ground-truth testbeds: the shapes world and its small CLIP.", no_args_is_help=True)

    @sub.command("train-shapes")
    def train_shapes_cmd(
        minutes: float = typer.Option(10.0, "--minutes", min=0.05, help="Wall-clock training budget."),
        out: Path = typer.Option(
            Path("shapes_clip"), "--out", callback=out_dir, help="Output directory (save_pretrained + vocab.json)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for initialisation and training scenes."),
        processes: int = typer.Option(
            _cores(), "--processes", min=1, help="Data-parallel processes (default: one per core, at most 2)."
        ),
        threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads per process."),
        steps: int = typer.Option(None, "--steps", min=1, help="Stop after this many steps even if time is left."),
        loss: str = typer.Option(
            "sigmoid", "--loss", help="sigmoid (binary loss per scene and text) or softmax (multi-positive)."
        ),
        init_from: Path = typer.Option(None, "--init-from", help="Continue from the weights in this directory."),
        rank_weight: float = typer.Option(1.0, "--rank-weight", min=0.0, help="Weight of the category ranking loss."),
        lr: float = typer.Option(
            2e-3,
            "--lr",
            min=0.0,
            help="Peak AdamW learning rate (embeddings, norms, biases, projections; every parameter with --optimizer adamw).",
        ),
        batch_size: int = typer.Option(96, "--batch-size", min=1, help="Scenes per step and process."),
        token_drop: float = typer.Option(
            0.25, "--token-drop", min=0.0, max=0.95, help="Share of patch tokens each training image leaves out."
        ),
        init: str = typer.Option(
            "mimetic", "--init", help="Image tower start: mimetic (fast from scratch) or default (transformers')."
        ),
        image_layers: int = typer.Option(
            None,
            "--image-layers",
            min=1,
            max=12,
            help="Transformer blocks of the image tower (default: the recipe's, 3).",
        ),
        activation: str = typer.Option(
            None,
            "--activation",
            help="MLP activation of both towers: gelu, relu or quick_gelu (default: the recipe's, relu).",
        ),
        optimizer: str = typer.Option(
            None,
            "--optimizer",
            help="muon (Muon for the blocks' matrices, AdamW for the rest) or adamw (AdamW for all) (default: the recipe's, muon).",
        ),
        muon_lr: float = typer.Option(
            None, "--muon-lr", min=0.0, help="Muon's peak learning rate (default: the recipe's, 0.008)."
        ),
        evaluate: bool = typer.Option(
            True, "--evaluate/--no-evaluate", help="Measure the bars on held-out scenes after training."
        ),
        save_every: float = typer.Option(
            120.0, "--save-every", min=0.1, help="Seconds between saves of the weights to --out (Ctrl-C saves too)."
        ),
        spurious: float = typer.Option(
            None,
            "--spurious",
            help="Train with a badge cue: the main object's category badge is drawn with this probability P (otherwise no badge or another category's); captions never mention it. The shipped testbed:spurious used 1.0 with --steps 300 (longer runs, and P=0.9 or 0.98, learn to ignore the badge; RESULTS.md).",
        ),
    ) -> None:
        """Train a small CLIP on the shapes world; writes weights, vocab.json and train_log.csv."""
        from ..testbeds.shapes_eval import evaluate_shapes
        from ..testbeds.shapes_train import OPTIMIZERS, ShapesCLIPConfig, train_shapes
        from ..testbeds.testbed_models import load_shapes_clip

        if loss not in ("sigmoid", "softmax"):
            raise InputError(f"--loss {loss!r}: use sigmoid or softmax")
        if init not in ("mimetic", "default"):
            raise InputError(f"--init {init!r}: use mimetic or default")
        image_layers = image_layers or ShapesCLIPConfig.vision_layers
        activation = activation or ShapesCLIPConfig.activation
        if activation not in ACTIVATIONS:
            raise InputError(f"--activation {activation!r}: use {', '.join(ACTIVATIONS)}")
        optimizer = optimizer or ShapesCLIPConfig.optimizer
        if optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer {optimizer!r}: use {' or '.join(OPTIMIZERS)}")
        muon_lr = ShapesCLIPConfig.muon_lr if muon_lr is None else muon_lr
        if spurious is not None and not 0.0 <= spurious <= 1.0:
            raise InputError(f"--spurious {spurious}: give a probability between 0 and 1")
        cfg = ShapesCLIPConfig(
            threads=threads,
            rank_weight=rank_weight,
            lr=lr,
            loss=loss,
            batch_size=batch_size,
            token_drop=token_drop,
            init=init,
            vision_layers=image_layers,
            activation=activation,
            optimizer=optimizer,
            muon_lr=muon_lr,
            spurious=spurious,
        )
        cfg.save_every_s = save_every
        info = train_shapes(
            minutes=minutes,
            out_dir=out,
            seed=seed,
            config=cfg,
            init_from=init_from,
            processes=processes,
            max_steps=steps,
        )
        (out / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
        typer.echo(
            f"trained {info['steps']} steps x {processes} process(es) in {info['seconds']} s "
            f"({info['cpu_seconds']} CPU-s); loss {info['first_loss']:.3f} -> "
            f"{info['last_loss']:.3f}; saved to {out}"
        )
        if evaluate:
            metrics: dict[str, Any] = dict(evaluate_shapes(load_shapes_clip(out)))
            if spurious is not None:
                from ..testbeds.spurious import evaluate_spurious

                metrics["groups"] = evaluate_spurious(load_shapes_clip(out))
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            typer.echo(json.dumps(metrics, indent=2))

    @sub.command("eval-shapes")
    def eval_shapes_cmd(
        model: str = typer.Option("testbed:shapes", "--model", help="testbed:shapes or testbed:shapes@DIR."),
        n: int = typer.Option(500, "--n", min=10, help="Held-out scenes per test."),
    ) -> None:
        """Measure zero-shot bars of a shapes-world model on held-out scenes (JSON to stdout)."""
        from ..models.registry import load_model
        from ..testbeds.shapes_eval import evaluate_shapes

        typer.echo(json.dumps(evaluate_shapes(load_model(model), n_single=n, n_multi=n), indent=2))

    @sub.command("eval-spurious")
    def eval_spurious_cmd(
        model: str = typer.Option(
            "testbed:spurious",
            "--model",
            help="A shapes-world model (testbed:spurious, testbed:shapes, testbed:shapes@DIR).",
        ),
        n: int = typer.Option(500, "--n", min=10, help="Held-out single-object scenes per group."),
    ) -> None:
        """Zero-shot accuracy with the category's badge, without a badge and with another's (JSON to stdout)."""
        from ..models.registry import load_model
        from ..testbeds.spurious import evaluate_spurious

        typer.echo(json.dumps(evaluate_spurious(load_model(model), n=n), indent=2))

    @sub.command("concepts")
    def concepts_cmd(out: Path = typer.Argument(..., help="JSON file to write.")) -> None:
        """Write the shapes world's concept set (DEAL format: {class: [descriptors]})."""
        from ..testbeds.shapes_categories import write_concept_set

        typer.echo(f"wrote {write_concept_set(out)}")

    app.add_typer(sub, name="testbed")
