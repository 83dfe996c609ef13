"""``vlexplain compare``: every method side by side on one image and a few texts."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError, MethodError
from ._out import out_dir


def resolve_methods(model: Any, spec: str, contrast: bool = False) -> tuple[list[str], list[str]]:
    """``all`` or a comma list -> (methods to run, notes about skipped ones). With ``contrast``
    the methods must explain a contrast too (``all`` skips the others with a note)."""
    import vlexplain as vx

    from ..attribution.base import brief_reason

    applicable = vx.methods_for(model)
    if spec.strip() == "all":
        names = [n for n in vx.list_methods() if "image" in applicable.get(n, [])]
        notes = [
            f"{n}: {brief_reason(vx.get_method(n).why_not(model, 'image') or '')}"
            for n in vx.list_methods()
            if n not in names
        ]
        if contrast:
            no = {n: vx.get_method(n).why_not_contrast() for n in names}
            notes += [f"{n}: {brief_reason(w).split(' (methods that can', 1)[0]}" for n, w in no.items() if w]
            names = [n for n in names if not no[n]]
        return names, notes
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError("--methods is empty; give 'all' or a comma-separated list")
    for n in names:
        cls = vx.get_method(n)  # unknown -> MethodError listing the methods
        why = cls.why_not(model, "image")
        if why is not None:
            ok = [m for m, s in applicable.items() if "image" in s]
            raise MethodError(f"{brief_reason(why)}; methods that apply to this model's images: {', '.join(ok)}")
        if contrast and (why := cls.why_not_contrast()) is not None:
            raise MethodError(why)
    return names, []


def compare(
    model: Any,
    image: Any,
    texts: list[str],
    methods: list[str],
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    versus: str | None = None,
    versus_image: Any = None,
) -> dict[str, list[Any]]:
    """Run each method on (image, every text); returns ``{method: [Explanation per text]}``.
    ``versus`` / ``versus_image``: every map explains that contrast (see ``vx.explain``)."""
    from rich.progress import Progress

    import vlexplain as vx

    out: dict[str, list[Any]] = {}
    with Progress(transient=True, disable=not progress) as prog:
        task = prog.add_task("methods", total=len(methods))
        for m in methods:
            prog.update(task, description=m)
            exps = vx.explain(
                model,
                image,
                texts,
                method=m,
                seed=seed,
                versus=versus,
                versus_image=versus_image,
                **(options or {}).get(m, {}),
            )
            out[m] = exps if isinstance(exps, list) else [exps]
            prog.advance(task)
    return out


def compare_figure(results: dict[str, list[Any]], texts: list[str], path: Path, title: str) -> None:
    """Rows = texts, columns = image + one overlay per method (with its run time)."""
    from ..viz.core import overlay
    from ..viz.save import _mpl, atomic_write

    plt = _mpl()
    methods = list(results)
    # a row per text; a contrast of two images adds each text's row of maps on the versus image
    plan = [(r, False) for r in range(len(texts))]
    if results[methods[0]][0].versus is not None:
        plan = [(r, v) for r in range(len(texts)) for v in (False, True)]
    rows, cols = len(plan), len(methods) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.3 * rows + 0.6), squeeze=False)
    for row, (r, on_versus) in enumerate(plan):
        first = results[methods[0]][r]
        shown = first.versus if on_versus else first
        rgb = shown.image_rgb().cpu()
        axes[row][0].imshow(rgb.permute(1, 2, 0).numpy())
        axes[row][0].set_title(_row_title(texts[r], first, on_versus), fontsize=8)
        for c, m in enumerate(methods, start=1):
            e = results[m][r].versus if on_versus else results[m][r]
            m_ = e.image_map.detach().float().cpu()
            axes[row][c].imshow(overlay(rgb, m_.clamp_min(0) if float(m_.min()) < 0 else m_))
            axes[row][c].set_title(f"{m}\n{e.seconds:.2f} s", fontsize=9)
    for a in axes.flat:
        a.axis("off")
    fig.suptitle(
        title + "   (red = high attribution; each map min-max scaled; signed maps: positive part)", fontsize=10
    )
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def _row_title(text: str, e: Any, on_versus: bool) -> str:
    """A figure row's title: the text and its cosine, or what a contrast contrasted."""
    from ..viz.save import wrap_title

    c = e.contrast
    if c is None:
        return f"\u201c{text}\u201d\ncosine {e.score:.3f}"
    if c.kind == "text":
        return wrap_title(f"\u201c{text}\u201d rather than \u201c{c.versus}\u201d {c.difference:+.3f}", 26, 3)
    if on_versus:
        return wrap_title(f"versus image {c.versus}, \u201c{text}\u201d cosine {c.versus_score:.3f}", 26, 3)
    return wrap_title(f"this image, \u201c{text}\u201d cosine {c.score:.3f} ({c.difference:+.3f})", 26, 3)


def compare_page(results: dict[str, list[Any]], texts: list[str], figure: str, title: str, notes: list[str]) -> str:
    from ..viz.core import token_html

    head = "".join(f"<th>{html.escape(m)}</th>" for m in results)
    rows = []
    for r, t in enumerate(texts):
        first = results[next(iter(results))][r]
        line = f"cosine {first.score:.3f}" if first.contrast is None else first.contrast.label(t)
        cells = "".join(
            f"<td>{token_html(e.tokens, e.token_scores) if e.token_scores is not None else '—'}"
            f"<div class='t'>{e.seconds:.2f} s</div></td>"
            for e in (results[m][r] for m in results)
        )
        rows.append(f"<tr><th>{html.escape(t)}<div class='t'>{html.escape(line)}</div></th>{cells}</tr>")
    skipped = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        "<!doctype html><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
        "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}"
        ".t{color:#666;font-size:12px;font-weight:normal}</style>"
        f"<h1 style='font-size:20px'>{html.escape(title)}</h1><img src='{figure}' style='max-width:100%'>"
        f"<h2 style='font-size:16px'>Token highlights</h2><table><tr><th>text</th>{head}</tr>{''.join(rows)}</table>"
        + (f"<p>Not run (do not apply to this model's images):</p><ul>{skipped}</ul>" if skipped else "")
    )


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        image: Path = typer.Argument(..., help="An image file."),
        text: list[str] = typer.Option(..., "--text", "-t", help="A text; repeat for several."),
        methods: str = typer.Option("all", "--methods", help="'all' or a comma list, e.g. m2ib,gradcam,rise."),
        model: str = typer.Option("offline", "--model", "-m", help="Model spec (see `vlexplain models`)."),
        out: Path = typer.Option(
            Path("vlexplain-compare"),
            "--out",
            "-o",
            callback=out_dir,
            help="Output directory (default: vlexplain-compare in the current folder; a rerun replaces its files).",
        ),
        seed: int = typer.Option(0, "--seed"),
        device: str | None = typer.Option(None, "--device"),
        options: str = typer.Option(
            "{}", "--options", help='Per-method options as JSON, e.g. \'{"rise": {"n_masks": 500}}\'.'
        ),
        versus: str | None = typer.Option(None, "--versus", help="Explain why each text rather than this one."),
        versus_image: Path | None = typer.Option(
            None, "--versus-image", help="Explain why IMAGE ranks above this one for each text (maps on both)."
        ),
    ) -> None:
        """Every method on IMAGE and each --text: one figure (texts x methods), token highlights, JSON, HTML."""
        from ..attribution.options import check_methods_options
        from ..images import check_image_size, load_image
        from ..outdir import claimed
        from ..textclean import clean_text
        from ..validate import check_seed, parse_json_option
        from .explain import check_versus, load_model_cli

        opts = parse_json_option(options, "--options", '{"rise": {"n_masks": 500}}')
        text = [clean_text(t) for t in text]  # control characters removed; nothing visible: refused
        check_seed(seed)
        img = load_image(image)
        if versus_image is not None and not versus_image.exists():
            raise InputError(f"--versus-image not found: {versus_image}")
        m = load_model_cli(model, device)
        check_image_size(img, tuple(m.input_size), str(image), warn=False)
        vi = None if versus_image is None else str(versus_image)
        target = check_versus(m, [], None, list(text), versus, vi, [(str(image), img)])
        names, notes = resolve_methods(m, methods, contrast=target == "contrast")
        opts = check_methods_options(names, opts, "--options")
        for n in names:  # the model-dependent checks (layers it has...), before any work
            __import__("vlexplain").get_method(n).create(m, **opts.get(n, {}))
        with claimed(out):
            _write_compare(m, img, image, list(text), names, notes, seed, opts, out, versus, vi)


def _write_compare(
    m, img, image: Path, text: list[str], names, notes, seed: int, opts, out: Path, versus, versus_image
) -> None:
    """Run every method and write compare.png, compare.json and index.html."""
    from ..files import shown_name
    from ..viz.save import atomic_write_text

    results = compare(m, img, list(text), names, seed=seed, options=opts, versus=versus, versus_image=versus_image)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{shown_name(image.name)} · model {m.name}"
    compare_figure(results, list(text), out / "compare.png", title)
    data = {
        "image": shown_name(image),
        "model": m.name,
        "seed": seed,
        "texts": list(text),
        **({"versus": versus} if versus is not None else {}),
        **({"versus_image": shown_name(Path(versus_image))} if versus_image is not None else {}),
        "skipped": notes,
        "results": {k: [e.to_dict() for e in v] for k, v in results.items()},
    }
    atomic_write_text(out / "compare.json", json.dumps(data, indent=1))
    atomic_write_text(out / "index.html", compare_page(results, list(text), "compare.png", title, notes))
    typer.echo(f"wrote {out / 'index.html'}")
