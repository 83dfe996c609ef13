"""``open_clip:`` specs: architecture, weights and tokenizer, with one-line errors and no hub waits.

Spec forms (``rest`` is what follows ``open_clip:``)::

    ARCH                      random weights (timing, tests)
    ARCH/TAG                  OpenCLIP pretrained tag (downloaded from the hub, or its cache)
    ARCH/path/to/ckpt.pt      a local checkpoint (.pt / .bin / .safetensors), loaded weights-only
    ...@TOKENIZER_DIR         the tokenizer from a local directory (a transformers tokenizer saved with
                              save_pretrained), for architectures whose tokenizer lives on the hub
    local-dir:DIR             a directory with open_clip_config.json and weights

When the hub cannot be reached (``.hub.hub_offline``: ``HF_HUB_OFFLINE``, or one bounded probe),
every hub lookup runs against the local cache only, and a miss fails at once with one line naming
the local alternative. Checkpoints load with ``weights_only=True`` and nothing else: a file that
needs arbitrary code to unpickle, or is not a checkpoint at all, is refused with one line.
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, require

LOCAL_CKPT = "open_clip:ARCH/path/to/ckpt.pt"
LOCAL_TOK = "open_clip:ARCH/WEIGHTS@TOKENIZER_DIR (a tokenizer saved with save_pretrained)"


@contextlib.contextmanager
def hub_cache_only(active: bool = True) -> Iterator[None]:
    """Within the block, huggingface_hub and transformers read only the local cache (no requests)."""
    if not active:
        yield
        return
    import huggingface_hub.constants as c

    prev = c.HF_HUB_OFFLINE
    c.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        c.HF_HUB_OFFLINE = prev


def _offline_error(what: str, alternative: str) -> ModelLoadError:
    from .hub import offline_by_env

    why = "HF_HUB_OFFLINE is set" if offline_by_env() else "the Hugging Face hub cannot be reached from here"
    return ModelLoadError(f"{what} is not in the local cache and {why}; use {alternative}")


def split_spec(rest: str) -> tuple[str, str, str | None]:
    """``ARCH[/WEIGHTS][@TOKENIZER_DIR]`` -> (arch, weights, tokenizer dir or None)."""
    tok_dir = None
    if "@" in rest:
        rest, _, tok_dir = rest.rpartition("@")
        if not tok_dir or not Path(tok_dir).expanduser().is_dir():
            raise ModelLoadError(f"tokenizer directory {tok_dir!r} (after '@') does not exist; expected {LOCAL_TOK}")
        tok_dir = str(Path(tok_dir).expanduser())
    if rest.startswith("local-dir:"):
        return rest, "", tok_dir
    arch, _, weights = rest.partition("/")
    return arch, weights, tok_dir


def _text_cfg(open_clip: Any, arch: str) -> dict:
    cfg = open_clip.get_model_config(arch) or {}
    return dict(cfg.get("text_cfg", {}))


def _from_reader(e: BaseException) -> bool:
    """Whether ``e`` was raised while reading the file (torch.load's weights-only unpickler, safetensors)."""
    import traceback

    names = ("torch/serialization", "_weights_only_unpickler", "safetensors")
    return isinstance(e, (pickle.UnpicklingError, EOFError, UnicodeDecodeError)) or any(
        any(n in f.filename for n in names) for f in traceback.extract_tb(e.__traceback__)
    )


def _checkpoint_error(path: str, arch: str, e: BaseException) -> ModelLoadError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if _from_reader(e):
        return ModelLoadError(
            f"{path} is not a checkpoint vlexplain can load safely (not a PyTorch / safetensors weight file, "
            f"or one that needs arbitrary code to unpickle); pass the state dict of an OpenCLIP {arch} model"
        )
    return ModelLoadError(f"{path} does not hold the weights of an OpenCLIP {arch} model ({msg[:160]})")


def check_checkpoint(path: str, arch: str) -> None:
    """Read ``path`` weights-only (memory-mapped) before any model is built; one-line error if unreadable."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols before refusing
            warnings.simplefilter("ignore")
            obj = _read_weights(path, torch)
    except Exception as e:
        raise _checkpoint_error(path, arch, e) from None
    if obj is not None and not isinstance(obj, dict):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a state dict of an OpenCLIP {arch} model")


def _read_weights(path: str, torch: Any) -> Any:
    """The object in ``path`` read weights-only (None for safetensors, whose header is checked)."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            list(f.keys())
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _tag_cached(open_clip: Any, arch: str, tag: str) -> bool | None:
    """Whether the weights of a pretrained tag are in the local hub cache (None: not a hub download)."""
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    if cfg.get("file"):
        return Path(cfg["file"]).exists()
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename = hub.rstrip("/"), ""
    if not hub.endswith("/"):
        repo, filename = hub.rsplit("/", 1)
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """OpenCLIP logs download failures at ERROR level before raising; the raised error is reported instead."""
    import logging

    prev = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(prev)


def _create(open_clip: Any, name: str, pretrained: str | None) -> tuple[Any, Any]:
    kw: dict[str, Any] = {"pretrained": pretrained}
    params = inspect.signature(open_clip.create_model_and_transforms).parameters
    if "weights_only" in params:
        kw["weights_only"] = True
    elif "load_weights_only" in params:
        kw["load_weights_only"] = True
    model, _, pre = open_clip.create_model_and_transforms(name, **kw)
    return model, pre


def _tokenizer(open_clip: Any, name: str, tok_dir: str | None, offline: bool, spec: str) -> Any:
    """The architecture's own tokenizer (from ``tok_dir`` when given), loaded inside the error handling."""
    tc = _text_cfg(open_clip, name) if not name.startswith("local-dir:") else {}
    ctx = tc.get("context_length")
    if tok_dir is not None:
        from open_clip.tokenizer import HFTokenizer

        try:
            with hub_cache_only():
                return HFTokenizer(
                    tok_dir,
                    context_length=ctx or 77,
                    tokenizer_mode=tc.get("tokenizer_mode"),
                    **tc.get("tokenizer_kwargs", {}),
                )
        except Exception as e:  # transformers raises many types for a bad directory
            raise ModelLoadError(
                f"cannot read a tokenizer from {tok_dir}: {str(e).strip().splitlines()[0][:160]}"
            ) from None
    try:
        with hub_cache_only(offline):
            return open_clip.get_tokenizer(name)
    except Exception as e:
        where = tc.get("hf_tokenizer_name") or name
        if offline:
            raise _offline_error(f"the tokenizer of {spec} ({where})", LOCAL_TOK) from None
        raise ModelLoadError(
            f"cannot load the tokenizer of {spec} ({where}): {str(e).strip().splitlines()[0][:120]}; use {LOCAL_TOK}"
        ) from None


def load_open_clip(rest: str, tokenizer: Any = None, preprocess: Any = None) -> tuple[Any, Any, Any, str]:
    """Load an ``open_clip:`` spec (see the module docstring): ``(model, tokenizer, preprocess, name)``,
    which ``registry.wrap_model`` turns into an OpenCLIP dual encoder."""
    open_clip = require("open_clip", "openclip")
    from .hub import hub_offline

    spec = f"open_clip:{rest}"
    arch, weights, tok_dir = split_spec(rest)
    local_dir = arch.startswith("local-dir:")
    if not local_dir and arch not in open_clip.list_models():
        raise ModelLoadError(f"unknown OpenCLIP architecture {arch!r}; see open_clip.list_models()")
    is_file = bool(weights) and Path(weights).expanduser().exists()
    if weights and not is_file:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if weights not in tags:
            raise ModelLoadError(
                f"{weights!r} is neither a local checkpoint file nor a pretrained tag of {arch} "
                f"(tags: {', '.join(tags) or 'none'})"
            )
    if is_file and Path(weights).expanduser().is_dir():
        raise ModelLoadError(f"{weights} is a directory; pass a checkpoint file ({LOCAL_CKPT}) or local-dir:{weights}")
    if is_file:
        check_checkpoint(str(Path(weights).expanduser()), arch)
    offline = hub_offline()  # decided once per process; immediate with HF_HUB_OFFLINE
    if offline and weights and not is_file and _tag_cached(open_clip, arch, weights) is False:
        raise _offline_error(spec, LOCAL_CKPT)
    if tokenizer is None:  # first: a tokenizer that cannot be found fails before any model is built
        tokenizer = _tokenizer(open_clip, arch, tok_dir, offline, spec)
    try:
        with hub_cache_only(offline), _quiet_logging():
            model, pre = _create(open_clip, arch, str(Path(weights).expanduser()) if is_file else (weights or None))
    except ModelLoadError:
        raise
    except Exception as e:
        if is_file:
            raise _checkpoint_error(weights, arch, e) from None
        if offline:
            raise _offline_error(spec, LOCAL_CKPT) from None
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load {spec}: {msg}; without network pass {LOCAL_CKPT}") from None
    return model.eval(), tokenizer, preprocess or pre, spec
