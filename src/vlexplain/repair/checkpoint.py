"""Write a repaired model as a directory that loads as a model spec.

* Shapes-world models (``testbed:spurious``, ``testbed:shapes[@DIR]``): the transformers
  ``save_pretrained`` files, the word vocabulary and the base model's ``train_config.json``; the
  directory loads as ``testbed:shapes@DIR`` (or ``DIR``).
* Other transformers dual encoders: ``save_pretrained``, plus the tokenizer and processor files of
  the base model when it was itself loaded from a local directory; the directory loads as ``DIR``.

Every directory also holds ``repair.json``: the base model, the method and its settings. Other
model kinds (OpenCLIP, the offline model) are refused before any work is done.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import InputError

#: files of a local transformers directory that are not the weights or the model's config
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "config.json", "model.safetensors.index.json")


def _testbed_source(name: str) -> Path | None:
    from ..testbeds.testbed_models import assets_dir, spurious_dir

    if name == "testbed:spurious":
        return spurious_dir()
    if name == "testbed:shapes":
        return assets_dir()
    if name.startswith("testbed:shapes@"):
        return Path(name.split("@", 1)[1])
    return None


def check_writable(model: Any) -> None:
    """Refuse, in one line, a model whose repaired weights cannot be written as a loadable directory."""
    from ..models.hf_common import HFAdapter

    if not isinstance(model, HFAdapter) or not hasattr(model.model, "save_pretrained"):
        raise InputError(
            f"repair writes transformers models (CLIP, SigLIP, ..., the testbed models) as loadable directories; "
            f"{getattr(model, 'name', type(model).__name__)} is a {type(model).__name__}"
        )


def check_out(out: Path) -> None:
    """An output folder that holds another model (not a repair's) is refused."""
    out = Path(out)
    if (out / "config.json").exists() and not (out / "repair.json").exists():
        raise InputError(f"--out {out} holds a model that is not a repair's output; choose another folder")


def save_repaired(model: Any, out: Path, info: dict[str, Any], files: dict[str, str] | None = None) -> str:
    """Write ``model`` into ``out`` (files written under a temporary folder, then moved in); returns
    the model spec that loads it."""
    check_writable(model)
    check_out(out)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.model.save_pretrained(str(tmp), safe_serialization=True)
    name = getattr(model, "name", "")
    src = _testbed_source(name)
    if src is not None:
        for fname in ("vocab.json", "train_config.json"):
            if (src / fname).is_file():
                shutil.copy2(src / fname, tmp / fname)
    elif Path(name).is_dir():
        for path in Path(name).iterdir():
            if path.is_file() and path.name not in _WEIGHTS and not (tmp / path.name).exists():
                shutil.copy2(path, tmp / path.name)
    spec_dir = out.resolve()
    spec = f"testbed:shapes@{spec_dir}" if src is not None else str(spec_dir)
    for fname, text in (files or {}).items():
        (tmp / fname).write_text(text)
    (tmp / "repair.json").write_text(json.dumps({**info, "base_model": name, "spec": spec}, indent=1, default=str))
    for item in sorted(tmp.iterdir(), key=lambda f: f.name == "repair.json"):  # repair.json last: complete
        item.replace(out / item.name)
    tmp.rmdir()
    return spec
