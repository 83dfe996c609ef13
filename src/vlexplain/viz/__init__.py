"""Display: normalisation, colour maps, overlays, token highlights, figures and pages."""

from .core import colormap, normalize_map, overlay, token_colors, token_html

__all__ = ["colormap", "normalize_map", "overlay", "token_colors", "token_html"]
