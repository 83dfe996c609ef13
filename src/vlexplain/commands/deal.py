"""``vlexplain deal train`` and ``vlexplain deal evaluate``: DEAL concept-explanation fine-tuning."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any, cast

import typer

from ..concepts.sets import CATEGORY_TEMPLATE as CATEGORY
from ..concepts.sets import CONCEPT_TEMPLATE as CONCEPT
from ..errors import InputError
from ._out import out_dir

DATA_HELP = (
    "CUB_200_2011 folder, split folders (root/train|val|test/<class>/<image>), class folders "
    "(root/<class>/<image>, split by --test-fraction / --split-seed), or shapes:N "
    "(N single-object shapes-world scenes with exact part masks)."
)
SPLIT_HELP = (
    "Split: train, val, test or all (CUB: its train/test file; split folders: the folder; flat class "
    "folders: a seeded per-class split; shapes: train or test)."
)
#: settings that must agree for two evaluations to be compared
SAME = ("data", "split", "images", "k", "method", "category_template", "concept_template", "concepts_digest")


def _load(spec: str, device: str | None):
    from .explain import load_model_cli

    return load_model_cli(spec, device)


def _checkpoint(checkpoint: Path) -> Path:
    from ..concepts.train import find_checkpoint

    ck = find_checkpoint(checkpoint) or (checkpoint if (checkpoint / "model.safetensors").is_file() else None)
    if ck is None:
        raise InputError(f"no DEAL checkpoint in {checkpoint} (expected model.safetensors or a checkpoint/ folder)")
    return ck


def _load_checkpoint(model, ck: Path) -> int:
    from ..concepts.train import load_checkpoint

    step = load_checkpoint(ck, model)
    typer.echo(f"loaded {ck} (step {step})", err=True)
    return step


def _run_config(ck: Path) -> dict[str, Any]:
    """The training run's config.json (beside the checkpoint folder), or {}."""
    for p in (ck / "config.json", ck.parent / "config.json"):
        if p.is_file():
            try:
                cfg = json.loads(p.read_text())
            except ValueError:
                continue
            if isinstance(cfg, dict) and "lambda_sep" in cfg:
                return cfg
    return {}


def _is_shapes(data: str) -> bool:
    from ..testbeds.shapes_classes import is_shapes_spec

    return is_shapes_spec(data)


def _check_data(data: str) -> None:
    if _is_shapes(data):
        from ..testbeds.shapes_classes import parse_shapes_spec

        parse_shapes_spec(data)
    elif not Path(data).exists():
        from ..data.rows import is_url, refuse_url

        if is_url(data):
            refuse_url(data, "--data", "the data")
        raise InputError(f"--data {data}: not found ({DATA_HELP})")


def _data(data: str, split: str, model, rule: tuple[float, float, int] | None = None):
    """The dataset's ``split``; ``rule`` = (test fraction, val fraction, seed) of flat class folders."""
    if _is_shapes(data):
        from ..testbeds.shapes_classes import parse_shapes_spec, shapes_classes

        return shapes_classes(parse_shapes_spec(data), split, transform=model.preprocess)
    from ..data.classes import DEFAULT_TEST_FRACTION, Split, open_class_dataset

    _check_data(data)
    tf, vf, seed = rule or (DEFAULT_TEST_FRACTION, 0.0, 0)
    return open_class_dataset(
        Path(data),
        cast(Split, split),  # checked by open_class_dataset
        transform=model.preprocess,
        test_fraction=tf,
        val_fraction=vf,
        split_seed=seed,
    )


def _describe(ds, data: str, split: str) -> dict[str, Any]:
    """What was read: layout, split, split rule, image count."""
    if hasattr(ds, "describe"):
        return ds.describe()
    return {"path": data, "layout": "shapes world", "split": split, "images": len(ds)}


def _concepts(concepts: Path | None, data: str, k: int | None, classes):
    from ..concepts.sets import load_concepts

    if concepts is not None:
        return load_concepts(concepts, k=k, classes=classes)
    if not _is_shapes(data):
        raise InputError("--concepts is required (a JSON or CSV concept set) unless --data is shapes:N")
    from ..testbeds.shapes_categories import concept_set

    return load_concepts(concept_set(), k=k, classes=classes)


def _prompts(data: str, category: str | None, concept: str | None, run: dict[str, Any]):
    """Explicit templates, else the training run's, else the defaults for the data."""
    from ..testbeds.shapes_classes import SHAPES_CATEGORY_TEMPLATE, SHAPES_CONCEPT_TEMPLATE

    shapes = _is_shapes(data)
    category = category or run.get("category_template") or (SHAPES_CATEGORY_TEMPLATE if shapes else CATEGORY)
    concept = concept or run.get("concept_template") or (SHAPES_CONCEPT_TEMPLATE if shapes else CONCEPT)
    return _templates(category, concept)


def _templates(category: str, concept: str):
    from ..concepts.relevance import Templates

    t = Templates(category, concept)
    try:
        t.category_prompt("x"), t.concept_prompt("x", "y")
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(f"bad prompt template ({e}); use {{class}} and {{descriptor}} placeholders") from None
    return t


def _digest(cs, classes, k) -> str:
    sets = {c: list(cs.descriptors(c, k)) for c in classes}
    return hashlib.sha256(json.dumps(sets, sort_keys=True).encode()).hexdigest()[:16]


def register(app: typer.Typer) -> None:
    """Add the ``deal`` command group."""
    deal = typer.Typer(
        help="DEAL: fine-tune a model so its concept explanations are disentangled and localized.", no_args_is_help=True
    )

    @deal.command("train")
    def train_cmd(
        data: str = typer.Option(..., "--data", help=DATA_HELP),
        out: Path = typer.Option(
            ..., "--out", callback=out_dir, help="Run folder (config.json, log.csv, checkpoint/)."
        ),
        concepts: Path | None = typer.Option(
            None,
            "--concepts",
            help="Concept set: JSON {class: [descriptors]} or CSV class,descriptor (shapes:N: the world's part descriptors by default).",
        ),
        model: str = typer.Option("offline", "--model", "-m", help="Model spec (see `vlexplain models`)."),
        split: str = typer.Option("train", "--split", help=SPLIT_HELP),
        test_fraction: float = typer.Option(
            0.2, "--test-fraction", help="Flat class folders: each class's share of test images."
        ),
        val_fraction: float = typer.Option(
            0.0, "--val-fraction", help="Flat class folders: each class's share of val images."
        ),
        split_seed: int = typer.Option(0, "--split-seed", help="Flat class folders: the split's seed."),
        steps: int = typer.Option(5000, "--steps", min=1, help="Optimiser steps."),
        lr: float = typer.Option(5e-7, "--lr", help="AdamW learning rate."),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per step (per process)."),
        lambda_sep: float = typer.Option(0.1, "--lambda-sep", help="Weight of the disentangle loss."),
        lambda_con: float = typer.Option(0.01, "--lambda-con", help="Weight of the localize loss."),
        k: int = typer.Option(5, "--k", min=1, help="Descriptors per class."),
        prediction: str = typer.Option(
            "classes", "--prediction", help="Prediction loss: classes, contrastive or none."
        ),
        weight_decay: float = typer.Option(1e-3, "--weight-decay", help="AdamW weight decay."),
        freeze_text: bool = typer.Option(False, "--freeze-text", help="Keep the text tower fixed."),
        freeze_image: bool = typer.Option(False, "--freeze-image", help="Keep the image tower fixed."),
        image_blocks: int | None = typer.Option(
            None, "--image-blocks", min=1, help="Of the image tower, train only its last N blocks."
        ),
        category_template: str | None = typer.Option(
            None, "--category-template", help=f"Class prompt ({{class}}; default {CATEGORY!r}, shapes 'a {{class}}')."
        ),
        concept_template: str | None = typer.Option(
            None,
            "--concept-template",
            help=f"Concept prompt ({{class}}, {{descriptor}}; default {CONCEPT!r}, shapes '{{descriptor}}').",
        ),
        save_every: int = typer.Option(500, "--save-every", min=1, help="Checkpoint every N steps."),
        seed: int = typer.Option(0, "--seed", help="Data-order seed."),
        fresh: bool = typer.Option(False, "--fresh", help="Ignore an existing checkpoint in --out (default: resume)."),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: the model's)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Fine-tune with prediction + disentangle + localize losses (differentiable explanations)."""
        from ..concepts.train import deal_train

        if prediction not in ("classes", "contrastive", "none"):
            raise InputError(f"--prediction {prediction!r}: use classes, contrastive or none")
        _check_data(data)
        tpl = _prompts(data, category_template, concept_template, {})
        m = _load(model, device)
        ds = _data(data, split, m, (test_fraction, val_fraction, split_seed))
        cs = _concepts(concepts, data, k, ds.classes)
        from ..eval.runner import dist_info

        if dist_info()[0] == 0:
            typer.echo(f"training on the {split} split: {len(ds)} images", err=True)
        r = deal_train(
            m,
            ds,
            cs,
            out,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            lambda_sep=lambda_sep,
            lambda_con=lambda_con,
            freeze_text=freeze_text,
            freeze_image=freeze_image,
            image_blocks=image_blocks,
            resume=not fresh,
            progress=not no_progress,
            k=k,
            prediction=prediction,
            weight_decay=weight_decay,
            save_every=save_every,
            seed=seed,
            category_template=tpl.category,
            concept_template=tpl.concept,
        )
        if r.main:  # under `accelerate launch`, process 0 reports for all
            typer.echo(
                json.dumps(
                    {
                        "step": r.step,
                        "stopped": r.stopped,
                        "checkpoint": str(r.checkpoint),
                        "world_size": r.world_size,
                        "last_losses": r.last_losses,
                    },
                    indent=1,
                )
            )
        if r.stopped != "done":
            raise typer.Exit(3)

    @deal.command("evaluate")
    def evaluate_cmd(
        data: str = typer.Option(..., "--data", help=DATA_HELP),
        out: Path = typer.Option(
            ..., "--out", callback=out_dir, help="Output folder: report.html, metrics.json, metrics.csv, gallery.npz."
        ),
        concepts: Path | None = typer.Option(
            None, "--concepts", help="Concept set (JSON or CSV; shapes:N: the world's part descriptors by default)."
        ),
        model: str = typer.Option("offline", "--model", "-m", help="Model spec (see `vlexplain models`)."),
        checkpoint: Path | None = typer.Option(
            None,
            "--checkpoint",
            help="A DEAL run folder or checkpoint folder: the report compares the model before and after loading it.",
        ),
        before: Path | None = typer.Option(
            None,
            "--before",
            help="An earlier `deal evaluate` --out folder: its results are the 'before' column (nothing is evaluated twice).",
        ),
        split: str = typer.Option("test", "--split", help=SPLIT_HELP),
        test_fraction: float | None = typer.Option(
            None,
            "--test-fraction",
            help="Flat class folders: each class's share of test images (default: the training run's, else 0.2).",
        ),
        val_fraction: float | None = typer.Option(
            None,
            "--val-fraction",
            help="Flat class folders: each class's share of val images (default: the training run's, else 0).",
        ),
        split_seed: int | None = typer.Option(
            None, "--split-seed", help="Flat class folders: the split's seed (default: the training run's, else 0)."
        ),
        k: int | None = typer.Option(None, "--k", min=1, help="Descriptors per class (default: the run's, else 5)."),
        method: str = typer.Option(
            "deal", "--method", help="Map method: deal, or any registered method (e.g. chefer, gradcam)."
        ),
        category_template: str | None = typer.Option(
            None, "--category-template", help="Class prompt ({class}; default: the run's, else the data's default)."
        ),
        concept_template: str | None = typer.Option(
            None,
            "--concept-template",
            help="Concept prompt ({class}, {descriptor}; default: the run's, else the data's default).",
        ),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N images."),
        gallery: int = typer.Option(4, "--gallery", min=0, help="Images whose concept maps the report shows."),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1."),
    ) -> None:
        """Accuracy, disentanglability, localizability, ground-truth part metrics; report.html before/after."""
        from ..concepts.evaluate import concept_gallery, evaluate_concepts
        from ..concepts.report import read_report, write_report

        _check_data(data)
        ck = _checkpoint(checkpoint) if checkpoint is not None else None
        run = _run_config(ck) if ck is not None else {}
        earlier = read_report(before) if before is not None else None
        k = k or run.get("k") or 5
        tpl = _prompts(data, category_template, concept_template, run)
        m = _load(model, device)
        trained = run.get("data") or {}
        rule = (
            test_fraction if test_fraction is not None else trained.get("test_fraction", 0.2),
            val_fraction if val_fraction is not None else trained.get("val_fraction", 0.0),
            split_seed if split_seed is not None else trained.get("split_seed", 0),
        )
        ds = _data(data, split, m, rule)
        cs = _concepts(concepts, data, k, ds.classes)
        n = len(ds) if limit is None else min(len(ds), limit)
        read = _describe(ds, data, split)
        _warn_overlap(trained, read)
        cfg: dict[str, Any] = {
            "model": model,
            "checkpoint": str(ck.resolve()) if ck else None,
            "checkpoint_step": None,
            "before": str(before.resolve()) if before else None,
            "data": data if _is_shapes(data) else str(Path(data).resolve()),
            "split": split,
            "images": n,
            "data_split": read,
            "concepts": str(concepts.resolve()) if concepts else "shapes world (built in)",
            "concepts_digest": _digest(cs, ds.classes, k),
            "k": k,
            "method": method,
            "category_template": tpl.category,
            "concept_template": tpl.concept,
            "batch_size": batch_size,
            "gallery": gallery,
            "device": str(m.device),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        if earlier is not None:
            assert before is not None  # earlier is read from --before
            _same(earlier[0], cfg, before)
        idx = list(range(min(gallery, n)))
        if earlier is not None and earlier[2]:  # show the images the earlier gallery shows
            idx = [g["index"] for g in earlier[2] if g["index"] < n][:gallery]
            earlier = (earlier[0], earlier[1], [g for g in earlier[2] if g["index"] in idx])

        def run_one(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            typer.echo(f"evaluating {name} ({n} images)", err=True)
            r = evaluate_concepts(m, ds, cs, k=k, method=method, batch_size=batch_size, max_images=n, templates=tpl)
            return r, concept_gallery(m, ds, cs, idx, k=k, templates=tpl, method=method)

        columns: dict[str, Any] = {}
        galleries: dict[str, Any] = {}
        if earlier is not None:
            columns["before"], galleries["before"] = earlier[1], earlier[2]
        elif ck is not None:
            columns["before"], galleries["before"] = run_one("the model before fine-tuning")
        if ck is not None:
            cfg["checkpoint_step"] = _load_checkpoint(m, ck)
        if run:
            cfg["training run"] = run
        name = "after" if columns else "model"
        columns[name], galleries[name] = run_one("the fine-tuned model" if ck is not None else "the model")
        path = write_report(out, cfg, columns, galleries)
        typer.echo(_summary(columns))
        typer.echo(f"wrote {path}", err=True)

    app.add_typer(deal, name="deal")


def _warn_overlap(trained: dict[str, Any], read: dict[str, Any]) -> None:
    """Say so when the evaluated images include the ones the checkpoint was trained on."""
    rule = ("test_fraction", "val_fraction", "split_seed")
    if not trained or trained.get("path") != read.get("path") or trained.get("layout") != read.get("layout"):
        return
    a, b = trained.get("split"), read.get("split")
    same_rule = all(trained.get(r) == read.get(r) for r in rule)
    if a == b or "all" in (a, b) or (read.get("layout") == "class folders" and not same_rule):
        typer.echo(
            f"warning: the {b} split evaluated here {'may share' if a != b and 'all' not in (a, b) else 'shares'} "
            f"images with the {a} split the checkpoint was trained on",
            err=True,
        )


def _same(earlier: dict[str, Any], cfg: dict[str, Any], folder: Path) -> None:
    keys = SAME + (("data_split",) if "data_split" in earlier else ())
    diff = [
        f"{key} {earlier.get(key)!r} there, {cfg.get(key)!r} here" for key in keys if earlier.get(key) != cfg.get(key)
    ]
    if diff:
        raise InputError(
            f"--before {folder} was evaluated with other settings ({'; '.join(diff)}); "
            "evaluate with the same data, split, limit, concepts, k, method and prompts"
        )


def _summary(columns: dict[str, Any]) -> str:
    from ..concepts.report import METRICS, delta_intervals, deltas, flatten

    flat = {c: flatten(r) for c, r in columns.items()}
    d = deltas(columns)
    ci = delta_intervals(columns)
    keys = [key for key, *_ in METRICS if any(key in f for f in flat.values())]
    lines = []
    for key in keys:
        vals = "  ".join(f"{c} {flat[c][key]:.4g}" if key in flat[c] else f"{c} –" for c in columns)
        band = f" [{ci[key][0]:+.4g}, {ci[key][1]:+.4g}]" if key in ci else ""
        lines.append(f"{key}: {vals}" + (f"  delta {d[key]:+.4g}{band}" if key in d else ""))
    return "\n".join(lines)
