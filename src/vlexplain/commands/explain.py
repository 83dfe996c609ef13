"""``vlexplain explain`` and ``demo`` (``models`` and ``methods`` are in ``.models``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError, MethodError
from ..interrupt import atomic, track
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


def early_checks(
    images: list[Path], texts: list[str], method: str, options: dict[str, Any], seed: int, target: str | None
) -> dict[str, Any]:
    """What can be checked before a model is loaded: the image files, the texts, the method and the
    types of its options, the seed and the target. Returns the checked options."""
    from ..attribution.base import get_method
    from ..files import check_input_file
    from ..textclean import clean_text
    from ..validate import check_seed

    for p in images:
        check_input_file(p, "image")
    for t in texts:
        clean_text(t)
    check_seed(seed)
    if target is not None and target not in ("cosine", "logit", "softmax", "contrast"):
        raise InputError(f"--target {target!r}: use cosine, logit, softmax or contrast")
    return get_method(method).checked_options(options)


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
    contrast = getattr(exp, "contrast", None)
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
        "contrast": None if contrast is None else contrast.label(exp.text),
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
    target: str | None,
    options: dict[str, Any],
    labels: dict[tuple[int, int], str] | None = None,
    title: str = "vlexplain",
    resume: bool = False,
    then: Callable[[], Any] | None = None,
    versus: str | None = None,
    versus_image: str | None = None,
) -> Path:
    """Explain every (image, text) pair (or zipped pairs), write per-pair files and the gallery.

    Inputs are validated (every image opened, every text checked, the method and options built,
    the folder's earlier run compared) before anything is written or the folder is claimed. With
    ``resume``, pairs whose files a run with the same settings and the same inputs (image files
    fingerprinted by content) left in ``out`` are read back instead of explained again; without
    it, an earlier run's files in ``out`` are replaced. ``then``: more writing into ``out`` (the
    interactions) while the folder is still claimed. ``versus`` (a text) or ``versus_image`` (a
    path) makes every pair a contrast (target ``contrast``).
    """
    from ..outdir import claimed

    plan = _plan(model, images, texts, method, zip_pairs, seed, target, options, labels, versus, versus_image)
    kept = _resumable(out, plan["settings"], plan["prefixes"]) if resume else set()
    with claimed(out):
        if not resume:
            _remove_earlier_run(out)
        index = _explain_pairs(model, plan, out, kept, method, seed, target, options, title)
        if then is not None:
            then()
        return index


def _plan(
    model, images, texts, method, zip_pairs, seed, target, options, labels, versus=None, versus_image=None
) -> dict[str, Any]:
    """Everything checked and prepared before anything is written: images, texts, pairs, method, settings."""
    import vlexplain as vx

    from ..attribution.targets import TARGETS
    from ..files import shown_name
    from ..images import check_image_size, load_image
    from ..textclean import clean_text
    from ..validate import check_seed

    if not texts:
        raise InputError("give at least one --text")
    for t in texts:
        clean_text(t)  # no visible character once control characters are removed: refused before writing
    check_seed(seed)
    if target is not None and target not in TARGETS:
        raise InputError(f"--target {target!r}: use one of {', '.join(TARGETS)}")
    loaded = [(shown_name(name), load_image(src)) for name, src in images]  # fails early on bad images
    for name, img in loaded:  # too elongated for the model's preprocessing: refused before writing
        check_image_size(img, tuple(model.input_size), name, warn=False)
    target = check_versus(model, method, target, texts, versus, versus_image, loaded)
    if target == "softmax" and len(texts) < 2:
        raise InputError("--target softmax needs at least two texts (the others are the candidates)")
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
    settings = {
        "model": model.name,
        "method": method,
        "seed": seed,
        "target": target,
        "options": options,
        "images": [name for name, _ in loaded],
        "inputs": [_fingerprint(src) for _, src in images],  # what --resume must find unchanged
        "texts": texts,
        "zip": zip_pairs,
        **({"versus": versus} if versus is not None else {}),
        **({"versus_image": versus_image, "versus_input": _fingerprint(versus_image)} if versus_image else {}),
    }
    prefixes = [pair_prefix(k, loaded[i][0], texts[j]) for k, (i, j) in enumerate(pairs)]
    return {"loaded": loaded, "pairs": pairs, "labels": labels or {}, "settings": settings, "prefixes": prefixes}


def _fingerprint(src: Any) -> str:
    """The SHA-256 of an image file's bytes, or of an in-memory image's pixels."""
    import hashlib

    from ..eval.identity import file_fingerprint

    if isinstance(src, (str, Path)):
        return file_fingerprint(Path(src))
    if hasattr(src, "tobytes"):
        h = hashlib.sha256(f"{getattr(src, 'mode', '')}{getattr(src, 'size', '')}".encode())
        h.update(src.tobytes())
        return h.hexdigest()
    return type(src).__name__


def _explain_pairs(model, plan, out, kept, method, seed, target, options, title) -> Path:
    from rich.progress import Progress

    import vlexplain as vx

    from ..attribution.api import prepare_images
    from ..viz.gallery import write_gallery
    from ..viz.save import atomic_write_text

    loaded, pairs, labels, texts = plan["loaded"], plan["pairs"], plan["labels"], plan["settings"]["texts"]
    target = plan["settings"]["target"]  # resolved (a versus makes it "contrast")
    versus, versus_image = plan["settings"].get("versus"), plan["settings"].get("versus_image")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RUN_FILE, json.dumps(plan["settings"], indent=1, default=str))
    entries = []
    pixels: dict[int, Any] = {}  # each image is preprocessed once, whatever the number of texts
    with Progress(transient=True) as prog, track("pairs", len(pairs), done=len(kept)) as work:
        task = prog.add_task(f"{method}", total=len(pairs))
        for k, (i, j) in enumerate(pairs):
            name, img = loaded[i]
            prefix, label = plan["prefixes"][k], labels.get((i, j))
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
                versus=versus,
                versus_image=versus_image,
                **options,
            )
            with atomic():  # the pair's files (its JSON last) and its count go together
                entries.append(save_entry(exp, out, prefix, Path(name).name, label))
                work.advance()
            prog.advance(task)
    sub = f"model {model.name} · method {method} · seed {seed} · target {target}"
    if versus is not None or versus_image is not None:
        sub += f" · versus {versus if versus is not None else Path(str(versus_image)).name}"
    return write_gallery(out, entries, title, sub)


def check_versus(
    model: Any,
    methods: str | list[str],
    target: str | None,
    texts: list[str],
    versus: str | None,
    versus_image: str | None,
    images: list[tuple[str, Any]],
) -> str:
    """The run's target; a bad contrast (an empty versus text or one that is also a --text, a versus
    image that is unreadable or one of ``images`` (name, PIL image), ``methods`` without a contrastive
    form, a contradicting --target) is refused before anything is written."""
    import numpy as np

    import vlexplain as vx

    from ..attribution.contrast import resolve_target
    from ..images import check_image_size, load_image
    from ..textclean import clean_text

    target = resolve_target(target, versus, versus_image)
    if versus is not None:
        try:
            v = clean_text(versus).strip()
        except InputError as e:
            raise InputError(f"--versus: {e}") from None
        if v in [t.strip() for t in texts]:
            raise InputError(f"--versus {versus!r} is also a --text: contrast each text with a different one")
    if versus_image is not None:  # unreadable or too elongated: refused here
        other = load_image(versus_image)
        check_image_size(other, tuple(model.input_size), versus_image, warn=False)
        same = [name for name, img in images if np.array_equal(np.asarray(img), np.asarray(other))]
        if same:
            raise InputError(
                f"--versus-image {versus_image} is the same image as {same[0]}: contrast with another image"
            )
    for method in [methods] if isinstance(methods, str) else methods:
        if target == "contrast" and (why := vx.get_method(method).why_not_contrast()) is not None:
            raise MethodError(why)
    return target


RUN_FILE = "explain_run.json"  # the settings of the run that wrote a folder (checked by --resume)
#: the files an explain run writes besides RUN_FILE: the gallery and each pair's files
_PAIR_FILES = (
    "[0-9][0-9][0-9]_*.json",
    "[0-9][0-9][0-9]_*_overlay.png",
    "[0-9][0-9][0-9]_*_text.html",
    "[0-9][0-9][0-9]_*_text.png",
    "[0-9][0-9][0-9]_*_interactions.png",
    "[0-9][0-9][0-9]_*_interactions.html",
)


def _remove_earlier_run(out: Path) -> None:
    """An earlier explain run's files in ``out`` (found by its RUN_FILE), so none is left stale."""
    from ..outdir import remove_run

    if (out / RUN_FILE).is_file():
        typer.echo(f"note: replacing the earlier results in {out}", err=True)
        remove_run(out, (RUN_FILE, "index.html"), _PAIR_FILES)


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
        "contrast": _contrast_label(d),
    }


def _contrast_label(d: dict[str, Any]) -> str | None:
    """The contrast line of an explanation's JSON (None for a plain explanation)."""
    from ..attribution.base import ContrastInfo

    c = d.get("contrast")
    if not c:
        return None
    return ContrastInfo(c["kind"], c["versus"], c["score"], c["versus_score"], c.get("role", "explained")).label(
        d["text"]
    )


def _resumable(out: Path, settings: dict[str, Any], prefixes: list[str]) -> set[str]:
    """The pairs an earlier run with the same settings and inputs finished in ``out`` (InputError if they differ)."""
    run = out / RUN_FILE
    again = "rerun without --resume to replace the earlier results, or choose another --out"
    if not run.is_file():
        return set()
    try:
        before = json.loads(run.read_text(encoding="utf-8"))
        if not isinstance(before, dict):
            raise ValueError
    except (OSError, ValueError):
        raise InputError(f"cannot resume {out}: {RUN_FILE} is unreadable; {again}") from None
    now = json.loads(json.dumps(settings, default=str))
    diff = sorted(k for k in now if k != "inputs" and before.get(k) != now[k])
    if diff:
        raise InputError(f"cannot resume {out}: the settings differ in {', '.join(diff)}; {again}")
    old = before.get("inputs")
    changed = [n for n, a, b in zip(now["images"], old or [], now["inputs"]) if a != b]
    if old is None or changed:
        what = (
            f"the image file{'s' if len(changed) > 1 else ''} {', '.join(changed[:3])} changed since the first run"
            if changed
            else "the first run recorded no fingerprint of its images (an older vlexplain)"
        )
        raise InputError(f"cannot resume {out}: {what}; {again}")
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
        target: str | None = typer.Option(
            None,
            "--target",
            help="cosine (default), logit, softmax (over the given texts) or contrast (the default with --versus).",
        ),
        versus: str | None = typer.Option(
            None, "--versus", help="Explain why each text rather than this one: cos(image, text) - cos(image, versus)."
        ),
        versus_image: Path | None = typer.Option(
            None,
            "--versus-image",
            help="Explain why each image ranks above this one for the text (maps on both images).",
        ),
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
        """Explain every IMAGE x TEXT pair: overlay PNGs, token highlights, JSON and an index.html gallery.

        With --versus or --versus-image every pair is a contrast: the maps explain a difference of two
        scores, and the figures say what was contrasted."""
        opts = parse_options(option)
        ix_opts = parse_options(interaction_option)
        interactions = interactions or span is not None
        for k, v in (("layer", layer), ("beta", beta), ("steps", steps)):
            if v is not None:
                opts[k] = v
        if interactions and (versus is not None or versus_image is not None):
            raise InputError(
                "--interactions explain the pair's cosine: run them without --versus / --versus-image "
                "(or the contrast without --interactions)"
            )
        if versus_image is not None:
            from ..files import check_input_file

            check_input_file(versus_image, "--versus-image")
        opts = early_checks(images, list(text), method, opts, seed, target)  # before loading a model
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
            versus=versus,
            versus_image=None if versus_image is None else str(versus_image),
            then=(lambda: write_interactions(
                m, list(images), list(text), zip_pairs=zip_pairs, out=out, seed=seed,
                method=interaction_method, options=ix_opts, span=span,
            )) if interactions else None,
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
        from ..outdir import claimed
        from ..testbeds.photos import demo_set
        from ..validate import check_seed

        check_seed(seed)
        cls = __import__("vlexplain").get_method(method)  # unknown: the message lists the methods
        photos, texts, labels = demo_set()
        m = load_model_cli("offline", device)
        if all(cls.why_not(m, s) is not None for s in ("image", "text")):
            from ..attribution.api import not_applicable

            raise MethodError(not_applicable(cls, m))
        images = [(name, img) for name, img in photos]
        with claimed(out):
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
    return write_gallery(out, entries, "vlexplain demo — offline model", demo_subtitle(method, seed))


def demo_subtitle(method: str, seed: int) -> str:
    """The demo page's subtitle: what the labels and the scores are (and, for M2IB, the unit)."""
    unit = (
        " · the colour bar is in nats: the information (natural-log units) the bottleneck lets through "
        "at each spot of the image; more nats, more the match relies on it"
        if method in ("m2ib", "m2ib_fast")
        else ""
    )
    return (
        f"model offline (EfficientNet-Lite0 + MiniLM) · method {method} · seed {seed} · "
        "the label is the expected answer (green: the text describes the photo, red: it does not); "
        f"the cosine is the model's own score{unit}"
    )
