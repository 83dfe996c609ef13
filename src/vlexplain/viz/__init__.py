"""Display: normalisation, colour maps, overlays, token highlights, figures and pages.

The names below load on first use (``vlexplain.viz.core`` imports torch; the report's styles in
``vlexplain.viz.html`` do not need it)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {name: ".core" for name in ("colormap", "normalize_map", "overlay", "token_colors", "token_html")}

if TYPE_CHECKING:
    from .core import colormap, normalize_map, overlay, token_colors, token_html


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vlexplain.viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["colormap", "normalize_map", "overlay", "token_colors", "token_html"]
