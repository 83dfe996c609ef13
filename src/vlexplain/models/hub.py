"""Whether the Hugging Face hub can be reached, decided once per process.

Loaders of hub specs (``hf:ORG/NAME``, ``open_clip:ARCH/TAG``) ask ``hub_offline`` before
anything downloads. Offline, they load from the local cache only (``local_files_only``) and, when
the model is not cached, fail at once with one line naming the local alternative, instead of
spending minutes in the hub client's retries.

The answer is ``True`` when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true
value, else it comes from one TCP connection to the hub's endpoint (``HF_ENDPOINT``, default
https://huggingface.co) that must succeed within ``PROBE_TIMEOUT_S`` seconds. The probe runs
once; later calls reuse its answer.

Example:
    >>> from vlexplain.models.hub import hub_offline
    >>> hub_offline()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from ..errors import ModelLoadError

#: seconds the one reachability probe may take (name resolution and TCP connect together)
PROBE_TIMEOUT_S = 3.0

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_STATE: dict[str, bool] = {}


def offline_by_env() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` asks for offline mode."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> tuple[str, int]:
    """(host, port) of the hub endpoint (``HF_ENDPOINT`` or huggingface.co)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    return url.hostname or "huggingface.co", port


def _reachable(host: str, port: int, timeout: float) -> bool:
    """One TCP connection within ``timeout`` s (name resolution included: it runs in a thread)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True, name="vlexplain-hub-probe")
    t.start()
    t.join(timeout)
    return bool(ok)


def hub_offline(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the hub cannot be reached (``HF_HUB_OFFLINE`` set, or the probe failed).

    The environment is read on every call; the network probe runs at most once per process.
    """
    if offline_by_env():
        return True
    if "offline" not in _STATE:
        _STATE["offline"] = not _reachable(*hub_endpoint(), timeout=timeout)
    return _STATE["offline"]


def forget_hub_state() -> None:
    """Drop the cached probe result (the next ``hub_offline`` probes again)."""
    _STATE.clear()


def offline_error(spec: str, alternative: str) -> ModelLoadError:
    """The one-line error for a hub spec that is not in the local cache while the hub is unreachable.

    Args:
        spec: what the user asked for (``hf:openai/clip-vit-base-patch32``).
        alternative: what to pass instead (``a save_pretrained directory: --model PATH``).
    """
    why = "HF_HUB_OFFLINE is set" if offline_by_env() else "the Hugging Face hub cannot be reached from here"
    return ModelLoadError(f"{spec} is not in the local cache and {why}; use {alternative}, or --model offline")
