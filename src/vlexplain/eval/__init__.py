"""Evaluation runs over datasets of image-caption pairs, and their HTML reports."""

from .io import load_maps, load_results
from .report import report
from .run_config import EvalConfig
from .runner import evaluate

__all__ = ["evaluate", "EvalConfig", "load_results", "load_maps", "report"]
