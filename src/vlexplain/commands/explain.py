"""``vlexplain explain`` and ``demo`` (``models`` and ``methods`` are in ``.models``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError, MethodError
from ..interrupt import track
from ._interactions import check_request, explain_options, write_interactions
from ._out import out_dir, pair_prefix, slug

ModelOpt = typer.Option("offline", "--model", "-m", help="Model spec (see `vlexplain models`).")
_IX = explain_options()


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["steps=5", "baseline=blur"]`` -> ``{"steps": 5, "baseline": "blur"}`` (JSON values where they parse)."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise InputError(f"--option expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def load_model_cli(spec: str, device: str | None):
    import vlexplain as vx

    from ..errors import InputError as _IE

    if device is not None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise _IE(f"--device {device}: CUDA is not available on this machine")
    with _status(f"loading model {spec}"):
        return vx.load_model(spec, device=device)


class _status:
    def __init__(self, msg: str):
        from rich.console import Console

        self.s = Console(stderr=True).status(msg)

    def __enter__(self):
        self.s.__enter__()

    def __exit__(self, *a):
        self.s.__exit__(*a)


def save_entry(exp: Any, out: Path, prefix: str, image_name: str, label: str | None) -> dict[str, Any]:
    """Write one pair's files under ``out/prefix*`` and return its gallery entry."""
    exp.save(str(out / prefix))
    return {
        "overlay": prefix + "_overlay.png" if exp.image_map is not None else None,
        "text": exp.text,
        "tokens": exp.tokens,
        "token_scores": None if exp.token_scores is None else exp.token_scores.tolist(),
        "score": exp.score,
        "method": exp.method,
        "seconds": exp.seconds,
        "json": prefix + ".json",
        "image": image_name,
        "label": label,
    }


def run_pairs(
    model,
    images: list[tuple[str, Any]],
    texts: list[str],
    *,
    method: str,
    out: Path,
    zip_pairs: bool,
    seed: int,
    target: str,
    options: dict[str, Any],
    labels: dict[tuple[int, int], str] | None = None,
    title: str = "vlexplain",
    resume: bool = False,
) -> Path:
    """Explain every (image, text) pair (or zipped pairs), write per-pair files and the gallery.

    Inputs are validated (every image opened, every text checked, the method and options built)
    before anything is written. With ``resume``, pairs whose files a run with the same settings
    left in ``out`` are read back instead of explained again.
    """
    from rich.progress import Progress

    import vlexplain as vx

    from ..attribution.api import prepare_images
    from ..images import check_image_size, load_image
    from ..textclean import clean_text
    from ..viz.gallery import write_gallery
    from ..viz.save import atomic_write_text

    if not texts:
        raise InputError("give at least one --text")
    for t in texts:
        clean_text(t)  # no visible character once control characters are removed: refused before writing
    loaded = [(name, load_image(src)) for name, src in images]  # fails early on bad images
    for name, img in loaded:  # too elongated for the model's preprocessing: refused before writing
        check_image_size(img, tuple(model.input_size), name, warn=False)
    if zip_pairs:
        if len(loaded) != len(texts):
            raise InputError(f"--zip needs as many texts as images ({len(loaded)} images, {len(texts)} texts)")
        pairs = [(i, i) for i in range(len(texts))]
    else:
        pairs = [(i, j) for i in range(len(loaded)) for j in range(len(texts))]
    cls = vx.get_method(method)
    cls.create(model, **options)  # validates options before any work
    skipped = {s: cls.why_not(model, s) for s in ("image", "text")}
    if any(w is None for w in skipped.values()):  # (neither side: vx.explain refuses with the reasons)
        from ..attribution.base import brief_reason

        for s, why in skipped.items():
            if why is not None:
                typer.echo(f"note: {s} side not explained: {brief_reason(why)}", err=True)
    entries = []
    settings = {
        "model": model.name,
        "method": method,
        "seed": seed,
        "target": target,
        "options": options,
        "images": [name for name, _ in images],
        "texts": texts,
        "zip": zip_pairs,
    }
    prefixes = [pair_prefix(k, loaded[i][0], texts[j]) for k, (i, j) in enumerate(pairs)]
    kept = _resumable(out, settings, prefixes) if resume else set()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RUN_FILE, json.dumps(settings, indent=1, default=str))
    pixels: dict[int, Any] = {}  # each image is preprocessed once, whatever the number of texts
    with Progress(transient=True) as prog, track("pairs", len(pairs), done=len(kept)) as work:
        task = prog.add_task(f"{method}", total=len(pairs))
        for k, (i, j) in enumerate(pairs):
            name, img = loaded[i]
            prefix, label = prefixes[k], (labels or {}).get((i, j))
            if prefix in kept:
                entries.append(read_entry(out, prefix, Path(name).name, label))
                prog.advance(task)
                continue
            if i not in pixels:
                pixels[i] = prepare_images(model, img)
            exp = vx.explain(
                model,
                pixels[i],
                texts[j],
                method=method,
                seed=seed,
                target=target,
                candidates=texts if target == "softmax" else None,
                **options,
            )
            entries.append(save_entry(exp, out, prefix, Path(name).name, label))
            prog.advance(task)
            work.advance()
    sub = f"model {model.name} · method {method} · seed {seed} · target {target}"
    return write_gallery(out, entries, title, sub)


RUN_FILE = "explain_run.json"  # the settings of the run that wrote a folder (checked by --resume)


def read_entry(out: Path, prefix: str, image_name: str, label: str | None) -> dict[str, Any]:
    """The gallery entry of a pair explained earlier, from its ``prefix.json``."""
    d = json.loads((out / (prefix + ".json")).read_text())
    return {
        "overlay": prefix + "_overlay.png" if d.get("image_map_shape") else None,
        "text": d["text"],
        "tokens": d["tokens"],
        "token_scores": d["token_scores"],
        "score": d["score"],
        "method": d["method"],
        "seconds": d["seconds"],
        "json": prefix + ".json",
        "image": image_name,
        "label": label,
    }


def _resumable(out: Path, settings: dict[str, Any], prefixes: list[str]) -> set[str]:
    """The pairs an earlier run with the same settings finished in ``out`` (InputError if they differ)."""
    run = out / RUN_FILE
    if not run.is_file():
        return set()
    try:
        before = json.loads(run.read_text())
    except (OSError, ValueError):
        raise InputError(f"cannot resume {out}: {RUN_FILE} is unreadable; choose another --out") from None
    now = json.loads(json.dumps(settings, default=str))
    diff = sorted(k for k in now if before.get(k) != now[k])
    if diff:
        raise InputError(
            f"cannot resume {out}: the settings differ in {', '.join(diff)}; "
            "drop --resume to start over or choose another --out"
        )
    return {p for p in prefixes if (out / (p + ".json")).is_file()}


def register(app: typer.Typer) -> None:
    @app.command()
    def explain(
        images: list[Path] = typer.Argument(..., help="Image files."),
        text: list[str] = typer.Option(..., "--text", "-t", help="A text; repeat for several."),
        model: str = ModelOpt,
        method: str = typer.Option("m2ib", "--method", help="Attribution method (see `vlexplain methods`)."),
        out: Path = typer.Option(Path("vlexplain-out"), "--out", "-o", callback=out_dir, help="Output directory."),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ..."),
        seed: int = typer.Option(0, "--seed", help="Seed for stochastic methods."),
        zip_pairs: bool = typer.Option(False, "--zip", help="Pair image i with text i instead of every image x text."),
        target: str = typer.Option("cosine", "--target", help="cosine, logit or softmax (over the given texts)."),
        layer: int | None = typer.Option(
            None, "--layer", help="Block to attribute at (m2ib, gradcam; for m2ib -1 is the input of block 0)."
        ),
        beta: float | None = typer.Option(None, "--beta", help="M2IB compression weight."),
        steps: int | None = typer.Option(None, "--steps", help="M2IB / integrated-gradients steps."),
        option: list[str] = typer.Option([], "--option", help="Other method option KEY=VALUE; repeatable."),
        resume: bool = typer.Option(
            False, "--resume", help="Keep the pairs an interrupted run with the same settings finished in --out."
        ),
        interactions: bool = _IX["interactions"],
        span: str | None = _IX["span"],
        interaction_method: str = _IX["interaction_method"],
        interaction_option: list[str] = _IX["interaction_option"],
    ) -> None:
        """Explain every IMAGE x TEXT pair: overlay PNGs, token highlights, JSON and an index.html gallery."""
        opts = parse_options(option)
        ix_opts = parse_options(interaction_option)
        interactions = interactions or span is not None
        for k, v in (("layer", layer), ("beta", beta), ("steps", steps)):
            if v is not None:
                opts[k] = v
        for p in images:  # check paths before loading a model
            if not p.exists():
                raise InputError(f"image not found: {p}")
        m = load_model_cli(model, device)
        if interactions:  # bad method, option or span: one line before anything is written
            check_request(m, list(text), interaction_method, ix_opts, span)
        index = run_pairs(
            m,
            [(str(p), p) for p in images],
            list(text),
            method=method,
            out=out,
            zip_pairs=zip_pairs,
            seed=seed,
            target=target,
            options=opts,
            resume=resume,
        )
        if interactions:
            write_interactions(
                m, list(images), list(text), zip_pairs=zip_pairs, out=out, seed=seed,
                method=interaction_method, options=ix_opts, span=span,
            )  # fmt: skip
        typer.echo(f"wrote {index}")

    @app.command()
    def demo(
        out: Path = typer.Option(Path("vlexplain-demo"), "--out", "-o", callback=out_dir, help="Output directory."),
        method: str = typer.Option("m2ib", "--method", help="Attribution method."),
        device: str | None = typer.Option(None, "--device"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """The offline model on real photos (cat, coffee, rocket, astronaut, Grace Hopper), matching and non-matching texts."""
        from ..testbeds.photos import demo_set

        photos, texts, labels = demo_set()
        if method not in __import__("vlexplain").list_methods():
            raise MethodError(f"unknown method {method!r}")
        m = load_model_cli("offline", device)
        images = [(name, img) for name, img in photos]
        index = _run_demo(m, images, texts, labels, method, out, seed)
        typer.echo(f"wrote {index}  (open it in a browser)")


def _run_demo(m, images, texts, labels, method, out, seed):
    """Each photo with its own texts (zipped by the demo's plan)."""
    from rich.progress import Progress

    import vlexplain as vx

    from ..viz.gallery import write_gallery

    out.mkdir(parents=True, exist_ok=True)
    entries = []
    plan = [(i, t, labels[(i, t)]) for i in range(len(images)) for t in texts[i]]
    with Progress(transient=True) as prog:
        task = prog.add_task(f"demo ({method})", total=len(plan))
        for k, (i, t, lab) in enumerate(plan):
            name, img = images[i]
            exp = vx.explain(m, img, t, method=method, seed=seed)
            prefix = f"{k:03d}_{slug(name, 24)}_{slug(t)}"
            entries.append(save_entry(exp, out, prefix, name, lab))
            prog.advance(task)
    return write_gallery(
        out,
        entries,
        "vlexplain demo — offline model",
        f"model offline (EfficientNet-Lite0 + MiniLM) · method {method} · seed {seed} · "
        "green = text that describes the photo, red = one that does not",
    )
