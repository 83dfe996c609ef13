"""Per-method options of a run, and the explorer's bounds on them.

``check_methods_options`` checks ``{"m2ib": {"steps": 5}}`` for the methods a run chose (each
method's options through ``Explainer.checked_options``). The explorer adds ``web_options``:
expensive options are lowered to the bounds the methods document in ``Explainer.web_limits``, and
a request whose estimated cost (``Explainer.cost``, model passes per pair, times the texts)
exceeds ``MAX_REQUEST_COST`` is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from .base import get_method

#: the most model passes (forward or backward, see ``Explainer.cost``) one explorer request may ask for
MAX_REQUEST_COST = 60_000


def check_methods_options(methods: Sequence[str], options: Any, flag: str = "--method-options") -> dict[str, dict]:
    """Per-method options (``{"m2ib": {"steps": 5}}``) for the chosen ``methods``: every method named is
    one of them, and each one's options pass ``Explainer.checked_options``."""
    if not isinstance(options, dict):
        raise InputError(f'{flag}: expected an object of objects, e.g. {{"m2ib": {{"steps": 5}}}}')
    stray = [m for m in options if m not in methods]
    if stray:
        raise InputError(
            f"{flag} names {', '.join(map(repr, stray))}, not among the methods run ({', '.join(methods)})"
        )
    return {m: get_method(m).checked_options(o) for m, o in options.items()}


def web_options(methods: Sequence[str], options: dict[str, dict[str, Any]], n_texts: int) -> tuple[dict, list[str]]:
    """(options, notes) for an explorer request: each method's expensive options lowered to its
    ``web_limits`` (a note says which), then the request's estimated cost checked against
    ``MAX_REQUEST_COST``. Options must have passed ``Explainer.checked_options``."""
    out, notes = {}, []
    cost = 0.0
    for m in methods:
        cls = get_method(m)
        opts = dict(options.get(m, {}))
        for k, limit in cls.web_limits.items():
            v = cls.option(opts, k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > limit:
                opts[k] = type(v)(limit)
                notes.append(f"{m}.{k} lowered to {limit:g} (the explorer's limit)")
        out[m] = opts
        cost += cls.cost(opts) * n_texts
    if cost > MAX_REQUEST_COST:
        raise InputError(
            f"this request would take about {cost:,.0f} model passes (the explorer's limit is "
            f"{MAX_REQUEST_COST:,}); choose fewer methods or texts, or smaller options"
        )
    return out, notes
