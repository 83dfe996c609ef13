"""HTML rendering of explanations (notebook cards and run galleries)."""

from __future__ import annotations

from .save import explanation_html

__all__ = ["explanation_html"]
