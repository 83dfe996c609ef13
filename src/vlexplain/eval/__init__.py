"""Evaluation runs over datasets of image-caption pairs, and their HTML reports.

``evaluate`` and ``EvalConfig`` load on first use, so that reading the benchmark registry
(``vlexplain.eval.benchmarks``, which the command line does to list its kinds) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .io import load_maps, load_results
from .report import report  # (torch-free; named like its module, so imported here, not lazily)

#: public name -> the module that defines it (imported on first access)
_LAZY = {"evaluate": ".runner", "EvalConfig": ".run_config"}

if TYPE_CHECKING:
    from .run_config import EvalConfig
    from .runner import evaluate


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vlexplain.eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["evaluate", "EvalConfig", "load_results", "load_maps", "report"]
