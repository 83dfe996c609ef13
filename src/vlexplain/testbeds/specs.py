"""The ``testbed:`` model specs and the shapes-world family, registered without importing torch:
the package root calls ``register`` on ``import vlexplain``, and each callable imports
``vlexplain.testbeds.testbed_models`` (which loads the models) when it is first used."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models.families import Family, register_family
from ..models.loaders import register_loader

if TYPE_CHECKING:
    from ..models.base import DualEncoder


def _load_testbed(spec: str) -> DualEncoder:
    from .testbed_models import load_testbed

    return load_testbed(spec)


def _available() -> bool:
    from .testbed_models import assets_dir

    return (assets_dir() / "model.safetensors").exists()


def _trained_dir(p: Path) -> str | None:
    """A directory written by ``vlexplain testbed train-shapes --out`` loads as ``testbed:shapes@DIR``."""
    return f"testbed:shapes@{p}" if (p / "vocab.json").exists() and (p / "train_config.json").exists() else None


def _tiny(*args: Any, **kwargs: Any) -> DualEncoder:
    from .testbed_models import load_shapes_clip

    return load_shapes_clip(*args, **kwargs)


def register() -> None:
    """Register the ``testbed:`` specs with the model registry and the shapes-world CLIP with the
    families table (calling it again changes nothing)."""
    register_loader(
        "testbed:",
        "small CLIPs trained on the project's testbeds: testbed:shapes[@DIR], testbed:spurious",
        _available,
        directory=_trained_dir,
    )(_load_testbed)
    register_family(
        Family(
            key="testbed-shapes",
            name="shapes-world CLIP (trained by vlexplain)",
            library="vlexplain",
            examples="testbed:shapes, testbed:shapes@DIR",
            tiny=_tiny,
            notes="a small transformers CLIPModel with a word tokenizer; ground-truth masks in the shapes testbed; M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
        )
    )
