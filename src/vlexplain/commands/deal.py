"""``vlexplain deal train`` and ``vlexplain deal evaluate``: DEAL concept-explanation fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..concepts.sets import CATEGORY_TEMPLATE as CATEGORY
from ..concepts.sets import CONCEPT_TEMPLATE as CONCEPT
from ..errors import InputError


def _load(spec: str, device: Optional[str], checkpoint: Optional[Path]):
    from .explain import load_model_cli

    model = load_model_cli(spec, device)
    if checkpoint is not None:
        from ..concepts.train import find_checkpoint, load_checkpoint

        ck = find_checkpoint(checkpoint) or (checkpoint if (checkpoint / "model.safetensors").is_file() else None)
        if ck is None:
            raise InputError(f"no DEAL checkpoint in {checkpoint} (expected model.safetensors or a checkpoint/ folder)")
        step = load_checkpoint(ck, model)
        typer.echo(f"loaded {ck} (step {step})", err=True)
    return model


def _data(path: Path, split: str, model):
    from ..data.classes import open_class_dataset

    if not path.exists():
        raise InputError(f"--data {path}: not found (a CUB_200_2011 folder or class folders)")
    return open_class_dataset(path, split, transform=model.preprocess)  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    """Add the ``deal`` command group."""
    deal = typer.Typer(help="DEAL: fine-tune a model so its concept explanations are disentangled and localized.",
                       no_args_is_help=True)

    @deal.command("train")
    def train_cmd(
        data: Path = typer.Option(..., "--data", help="CUB_200_2011 folder or class folders (root/<class>/<image>)."),
        concepts: Path = typer.Option(..., "--concepts", help="Concept set: JSON {class: [descriptors]} or CSV class,descriptor."),
        out: Path = typer.Option(..., "--out", help="Run folder (config.json, log.csv, checkpoint/)."),
        model: str = typer.Option("offline", "--model", "-m", help="Model spec (see `vlexplain models`)."),
        split: str = typer.Option("train", "--split", help="CUB split: train, test or all."),
        steps: int = typer.Option(5000, "--steps", min=1, help="Optimiser steps."),
        lr: float = typer.Option(5e-7, "--lr", help="AdamW learning rate."),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per step (per process)."),
        lambda_sep: float = typer.Option(0.1, "--lambda-sep", help="Weight of the disentangle loss."),
        lambda_con: float = typer.Option(0.01, "--lambda-con", help="Weight of the localize loss."),
        k: int = typer.Option(5, "--k", min=1, help="Descriptors per class."),
        prediction: str = typer.Option("classes", "--prediction", help="Prediction loss: classes, contrastive or none."),
        weight_decay: float = typer.Option(1e-3, "--weight-decay", help="AdamW weight decay."),
        freeze_text: bool = typer.Option(False, "--freeze-text", help="Keep the text tower fixed."),
        category_template: str = typer.Option(CATEGORY, "--category-template", help="Class prompt ({class})."),
        concept_template: str = typer.Option(CONCEPT, "--concept-template", help="Concept prompt ({class}, {descriptor})."),
        save_every: int = typer.Option(500, "--save-every", min=1, help="Checkpoint every N steps."),
        seed: int = typer.Option(0, "--seed", help="Data-order seed."),
        fresh: bool = typer.Option(False, "--fresh", help="Ignore an existing checkpoint in --out (default: resume)."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: the model's)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Fine-tune with prediction + disentangle + localize losses (differentiable explanations)."""
        from ..concepts.sets import load_concepts
        from ..concepts.train import deal_train

        if prediction not in ("classes", "contrastive", "none"):
            raise InputError(f"--prediction {prediction!r}: use classes, contrastive or none")
        _templates(category_template, concept_template)
        m = _load(model, device, None)
        ds = _data(data, split, m)
        cs = load_concepts(concepts, k=k, classes=ds.classes)
        r = deal_train(m, ds, cs, out, steps=steps, lr=lr, batch_size=batch_size, lambda_sep=lambda_sep,
                       lambda_con=lambda_con, freeze_text=freeze_text, resume=not fresh, progress=not no_progress,
                       k=k, prediction=prediction, weight_decay=weight_decay, save_every=save_every, seed=seed,
                       category_template=category_template, concept_template=concept_template)
        typer.echo(json.dumps({"step": r.step, "stopped": r.stopped, "checkpoint": str(r.checkpoint),
                               "last_losses": r.last_losses}, indent=1))
        if r.stopped != "done":
            raise typer.Exit(3)

    @deal.command("evaluate")
    def evaluate_cmd(
        data: Path = typer.Option(..., "--data", help="CUB_200_2011 folder or class folders."),
        concepts: Path = typer.Option(..., "--concepts", help="Concept set (JSON or CSV)."),
        model: str = typer.Option("offline", "--model", "-m", help="Model spec (see `vlexplain models`)."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A DEAL run folder or checkpoint folder to load."),
        split: str = typer.Option("test", "--split", help="CUB split: train, test or all."),
        k: int = typer.Option(5, "--k", min=1, help="Descriptors per class."),
        method: str = typer.Option("deal", "--method", help="Map method: deal, or any registered method (e.g. chefer, gradcam)."),
        category_template: str = typer.Option(CATEGORY, "--category-template", help="Class prompt ({class})."),
        concept_template: str = typer.Option(CONCEPT, "--concept-template", help="Concept prompt ({class}, {descriptor})."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N images."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the metrics to this JSON file."),
        figures: int = typer.Option(0, "--figures", min=0, help="Also save concept-map figures of the first N images (next to --out)."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1."),
    ) -> None:
        """Accuracy (standard / concept prompts), disentanglability, localizability, part metrics."""
        from ..concepts.evaluate import evaluate_concepts, format_report
        from ..concepts.sets import load_concepts

        m = _load(model, device, checkpoint)
        ds = _data(data, split, m)
        cs = load_concepts(concepts, k=k, classes=ds.classes)
        tpl = _templates(category_template, concept_template)
        r = evaluate_concepts(m, ds, cs, k=k, method=method, batch_size=batch_size, max_images=limit, templates=tpl)
        typer.echo(format_report(r))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(json.dumps(r, indent=1))
            tmp.replace(out)
        if figures:
            _figures(m, ds, cs, k, method, figures, (out.parent if out is not None else Path(".")) / "deal_figures", tpl)

    app.add_typer(deal, name="deal")


def _templates(category: str, concept: str):
    from ..concepts.relevance import Templates

    t = Templates(category, concept)
    try:
        t.category_prompt("x"), t.concept_prompt("x", "y")
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(f"bad prompt template ({e}); use {{class}} and {{descriptor}} placeholders") from None
    return t


def _figures(model, ds, cs, k, method, n, folder: Path, templates) -> None:
    import torch

    from ..concepts.relevance import deal_maps, plot_concept_maps

    for i in range(min(n, len(ds))):
        x, y = ds[i]
        px = x[None].to(model.device, model.dtype)
        cm = deal_maps(model, px, [ds.classes[y]], cs, k=k, method=method, templates=templates)
        with torch.no_grad():
            rgb = model.denormalize(px[0])
        p = plot_concept_maps(rgb, cm.category[0], cm.concepts[0], cm.texts[0], folder / f"{i:04d}.png")
        typer.echo(f"wrote {p}", err=True)
