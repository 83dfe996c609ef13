"""The interaction half of ``vlexplain explain --interactions`` and the interaction-methods table of
``vlexplain methods``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import InputError


def check_request(model: Any, texts: list[str], method: str, options: dict[str, Any], span: str | None) -> None:
    """Refuse, in one line and before anything is written, an unknown method or option, a text the
    method cannot take, or a span that is not in every text."""
    from ..interactions.base import get_interaction_method
    from ..interactions.spans import span_tokens
    from ..textclean import clean_text

    inst = get_interaction_method(method).create(model, **options)
    for t in texts:
        t = clean_text(t)
        tb = model.tokenize([t])
        n = int(tb.content_mask.sum())
        if not n:
            raise InputError(f"the text {t!r} has no token to explain")
        inst.check_text(n)
        if span is not None:
            span_tokens(t, tb.shown_tokens(0), span)  # InputError naming the span and the text


def write_interactions(
    model: Any,
    images: list[Path],
    texts: list[str],
    *,
    zip_pairs: bool,
    out: Path,
    seed: int,
    method: str,
    options: dict[str, Any],
    span: str | None,
) -> list[str]:
    """Compute and save every pair's interactions as ``PREFIX_interactions.{png,html,json}``, with
    the same prefixes as the explanations (so each pair's files sit together)."""
    import vlexplain as vx

    from ..attribution.api import prepare_images
    from ..images import load_image
    from ._out import pair_prefix

    pairs = (
        [(i, i) for i in range(len(texts))]
        if zip_pairs
        else [(i, j) for i in range(len(images)) for j in range(len(texts))]
    )
    pixels: dict[int, Any] = {}
    written: list[str] = []
    for k, (i, j) in enumerate(pairs):
        if i not in pixels:
            pixels[i] = prepare_images(model, load_image(images[i]))
        inter = vx.interactions(model, pixels[i], texts[j], method=method, seed=seed, **options)
        assert not isinstance(inter, list)
        prefix = out / pair_prefix(k, str(images[i]), texts[j])
        written += inter.save(str(prefix), spans=[span] if span else [])
    return written


def print_interaction_methods(con: Any, model: Any | None) -> None:
    """The interaction-methods table (with a model: whether each applies, and why not)."""
    from rich.table import Table

    from ..interactions.base import get_interaction_method, list_interaction_methods

    t = Table(title="interaction methods (vx.interactions, explain --interactions)")
    for c in ("method", "kind", "applies" if model is not None else "needs", "description"):
        t.add_column(c, overflow="fold")
    for name in list_interaction_methods():
        cls = get_interaction_method(name)
        kind = "reference" if cls.reference else "interaction"
        if model is None:
            need = "gradients" if cls.needs_gradients else "forward passes" if cls.uses_model else "-"
        else:
            why = cls.why_not(model)
            need = "yes" if why is None else f"no: {why}"
        t.add_row(name, kind, need, cls.summary)
    con.print(t)


def explain_options() -> dict[str, Any]:
    """The typer options ``explain`` adds for interactions (kept here so the command stays short)."""
    return {
        "interactions": typer.Option(
            False, "--interactions", help="Also write token x region interactions (PREFIX_interactions.*)."
        ),
        "span": typer.Option(
            None,
            "--span",
            help="A part of the text whose region the interaction figure shows first (implies --interactions).",
        ),
        "interaction_method": typer.Option(
            "integrated_jacobians", "--interaction-method", help="Interaction method (see `vlexplain methods`)."
        ),
        "interaction_option": typer.Option(
            [], "--interaction-option", help="Interaction method option KEY=VALUE; repeatable."
        ),
    }
