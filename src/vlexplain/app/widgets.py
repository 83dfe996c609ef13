"""Widgets both tabs of the explorer share: the model menu and the image upload."""

from __future__ import annotations

from typing import Any

from .runner import ModelCache


def _model_choices(default: str, allowed: list[str] | None = None) -> list[str]:
    from ..models.registry import registered_loaders

    if allowed is not None:
        return list(allowed)
    choices = ["offline"]
    for entry in registered_loaders():
        if entry.prefix == "testbed:" and entry.available():
            choices.append("testbed:shapes")
    if default not in choices:
        choices.insert(0, default)
    return choices


def _model_label(cache: ModelCache) -> str:
    return "Model (or type any model spec)" if cache.allowed is None else "Model (those this server offers)"


def _image_input(gr, value: Any, max_upload_mb: float, height: int, elem_id: str):
    """The image upload of both tabs (a file path; upload or clipboard; the size limit in its label).

    ``value``: the image shown first (a path or a PIL image), or None.
    """
    return gr.Image(
        value=value,
        label=f"Image (PNG, JPEG, WebP…; up to {max_upload_mb:g} MB)",
        type="filepath",
        image_mode=None,
        sources=["upload", "clipboard"],
        format="png",
        height=height,
        elem_id=elem_id,
    )
