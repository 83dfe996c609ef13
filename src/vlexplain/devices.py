"""Checking a device name before anything is loaded onto it."""

from __future__ import annotations

import torch

from .errors import InputError

#: device types vlexplain runs on, with how to tell whether this machine has one
_KINDS = {
    "cpu": lambda: True,
    "cuda": lambda: torch.cuda.is_available(),
    "mps": lambda: bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
    "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
}


def check_device(device: str | torch.device | None) -> torch.device | None:
    """The device named by ``device``, or [`InputError`][vlexplain.InputError] if the name is not a device or this
    machine has no such device (``cuda`` without CUDA, ``cuda:3`` on a machine with two GPUs).

    Args:
        device: "cpu", "cuda", "cuda:1", "mps", a ``torch.device``, or None (None is returned).
    """
    if device is None:
        return None
    name = str(device).strip()
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"device {name!r} is not a device name; use cpu, cuda, cuda:1 or mps") from None
    if dev.type not in _KINDS:
        raise InputError(f"device {name!r}: vlexplain runs on {', '.join(_KINDS)}, not {dev.type}")
    if not _KINDS[dev.type]():
        raise InputError(f"device {name!r}: this machine has no {dev.type.upper()} device (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise InputError(f"device {name!r}: this machine has {n} CUDA device(s), numbered 0 to {n - 1}")
    return dev
