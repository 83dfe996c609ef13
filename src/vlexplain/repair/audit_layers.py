"""Where does a method see a cue? Sweep M2IB's bottleneck layer and beta, and Grad-CAM's layer.

For every setting, each pair of a ``CuePairs`` is explained (image side) and read at the map's own
resolution: the normalised cue share (share of the map's positive mass on the cue over its ceiling
at that resolution, ``vlexplain.metrics.cue``), the pointing on the cue, and Spearman's rho within
groups between the cue share and the model's true reliance on the cue (score with it minus score
without it). With a reference model that does not use the cue (e.g. ``testbed:shapes`` beside
``testbed:spurious``), the paired difference of the normalised share, model minus reference, tells
whether the map follows the model's use of the cue or only the cue's pixels. Every number comes
with a 95 % percentile bootstrap interval over pairs.

Example:
    >>> sweep = sweep_layers(vx.load_model("testbed:spurious"), audit_pairs("spurious"),
    ...                      reference=vx.load_model("testbed:shapes"))       # doctest: +SKIP
    >>> print(sweep.markdown())                                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .data import CuePairs

DEFAULT_BETAS = (0.1, 1.0, 3.0, 10.0)
#: methods the sweep knows how to vary, and the options it varies
SWEPT = {"m2ib": ("layer", "beta"), "m2ib_fast": ("layer", "beta"), "gradcam": ("layer",)}

Interval = tuple[float, float, float]


@dataclass
class SweepRow:
    """One setting of one method: its readings, each (value, low, high)."""

    method: str
    layer: int
    beta: float | None
    share: Interval  # normalised cue share, mean over the focus pairs
    pointing: Interval  # cue pointing, mean over the focus pairs
    rank: Interval  # Spearman's rho within groups of the cue share vs the true reliance
    diff: Interval | None = None  # normalised share, model minus reference, paired over the focus pairs
    undefined: int = 0  # pairs whose map has no positive mass (left out, counted)


@dataclass
class LayerSweep:
    """The result of ``sweep_layers``."""

    rows: list[SweepRow]
    model: str
    reference: str | None
    focus: str  # the group the shares are averaged over
    n: int
    source: str
    defaults: dict[str, int] = field(default_factory=dict)  # method -> its default layer on this model

    def markdown(self) -> str:
        ref = f" − `{self.reference}`" if self.reference else ""
        head = [
            f"Layer sweep on `{self.model}`"
            + (f" (reference `{self.reference}`)" if self.reference else "")
            + f": {self.n} pairs from {self.source}; shares and pointing over the `{self.focus}` pairs; "
            "rank within groups over all pairs; 95 % bootstrap intervals. `*`: the method's default layer.",
            "",
            "| method | layer | beta | normalised cue share | cue pointing | reliance rank within groups | "
            + (f"Δ normalised share (model{ref}) |" if self.reference else "")
            + " undefined |",
            "|:---|---:|---:|---:|---:|---:|" + ("---:|" if self.reference else "") + "---:|",
        ]
        for r in self.rows:
            star = "*" if self.defaults.get(r.method) == r.layer else ""
            cells = [
                r.method,
                f"{r.layer}{star}",
                "–" if r.beta is None else f"{r.beta:g}",
                _ci(r.share, "{:.3f}"),
                _ci(r.pointing, "{:.3f}"),
                _ci(r.rank, "{:+.3f}"),
            ]
            if self.reference:
                cells.append(_ci(r.diff, "{:+.3f}") if r.diff is not None else "–")
            cells.append(str(r.undefined))
            head.append("| " + " | ".join(cells) + " |")
        return "\n".join(head) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "reference": self.reference,
            "focus": self.focus,
            "n": self.n,
            "source": self.source,
            "defaults": self.defaults,
            "rows": [vars(r) for r in self.rows],
        }


def _ci(v: Interval | None, f: str) -> str:
    if v is None or np.isnan(v[0]):
        return "–"
    return f"{f.format(v[0])} [{f.format(v[1])}, {f.format(v[2])}]"


def settings(model: Any, methods: Sequence[str], layers: Sequence[int] | None, betas: Sequence[float]) -> list[dict]:
    """Every (method, layer, beta) to run; layers default to every block of the image tower."""
    n = model.image.num_blocks
    chosen = list(range(n)) if layers is None else list(layers)
    bad = [x for x in chosen if not 0 <= x < n]
    if bad:
        raise InputError(f"--layers {bad[0]} is out of range for this image tower (0..{n - 1})")
    out = []
    for m in methods:
        if m not in SWEPT:
            raise InputError(f"audit layers sweeps {', '.join(SWEPT)}; got {m!r}")
        for layer in chosen:
            for beta in betas if "beta" in SWEPT[m] else [None]:
                out.append({"method": m, "layer": layer, "beta": beta})
    return out


def _maps(model: Any, px: torch.Tensor, captions: list[str], s: dict, seed: int, batch_size: int) -> torch.Tensor:
    import vlexplain as vx

    opts: dict[str, Any] = {"layer": s["layer"]}
    if s["beta"] is not None:
        opts["beta"] = s["beta"]
    exps = vx.explain(
        model,
        px,
        captions,
        method=s["method"],
        sides=["image"],
        seed=[seed + i for i in range(len(captions))],
        batch_size=batch_size,
        **opts,
    )
    exps = exps if isinstance(exps, list) else [exps]
    return torch.stack([e.native_map.float().cpu() for e in exps])  # type: ignore[union-attr]


def _readings(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, np.ndarray]:
    from ..metrics.cue import cue_pointing, cue_share_report

    rep = cue_share_report(maps, masks)
    return {
        "normalised": rep["normalised"].numpy().astype(np.float64),
        "share": rep["cue_share"].numpy().astype(np.float64),
        "no_mass": rep["no_mass"].numpy(),
        "pointing": cue_pointing(maps, masks).numpy().astype(np.float64),
    }


def sweep_layers(
    model: Any,
    pairs: CuePairs,
    reference: Any = None,
    methods: Sequence[str] = ("m2ib", "gradcam"),
    layers: Sequence[int] | None = None,
    betas: Sequence[float] = DEFAULT_BETAS,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> LayerSweep:
    """Run every setting on ``model`` (and ``reference``); see the module's docstring.

    Args:
        model: the model audited.
        pairs: pairs showing the cue (``vlexplain.repair.data.audit_pairs``).
        reference: a model that does not use the cue, on the same pairs (optional).
        methods: among ``m2ib``, ``m2ib_fast``, ``gradcam``.
        layers: image-tower blocks (default: all).
        betas: M2IB's betas.
        seed: seeds the explanations (pair ``i`` gets ``seed + i``).
        batch_size: pairs explained together.
        progress: print one line per setting.

    Returns:
        A ``LayerSweep``.
    """
    from ..eval.report import bootstrap_ci
    from ..metrics.cue import spearman_ci

    todo = settings(model, methods, layers, betas)
    focus = "aligned" if "aligned" in pairs.groups else pairs.groups[0]
    sel = np.array([g == focus for g in pairs.groups])
    groups = np.array(pairs.groups)
    rel = pairs.true_reliance(model)
    px = pairs.pixels(model)
    masks = pairs.cue_masks(model)
    ref_px = pairs.pixels(reference) if reference is not None else None
    ref_masks = pairs.cue_masks(reference) if reference is not None else None
    rows = []
    for s in todo:
        got = _readings(_maps(model, px, pairs.captions, s, seed, batch_size), masks)
        diff = None
        if reference is not None:
            assert ref_px is not None and ref_masks is not None
            other = _readings(_maps(reference, ref_px, pairs.captions, s, seed, batch_size), ref_masks)
            diff = bootstrap_ci((got["normalised"] - other["normalised"])[sel])
        rows.append(
            SweepRow(
                s["method"],
                s["layer"],
                s["beta"],
                bootstrap_ci(got["normalised"][sel]),
                bootstrap_ci(got["pointing"][sel]),
                spearman_ci(got["share"], rel, groups=groups),
                diff,
                int(np.nansum(got["no_mass"])),
            )
        )
        if progress:
            print(f"{s['method']} layer {s['layer']} beta {s['beta']}: share {rows[-1].share[0]:.3f}", flush=True)
    defaults = {m: _default_layer(model, m) for m in dict.fromkeys(s["method"] for s in todo)}
    return LayerSweep(
        rows,
        getattr(model, "name", "model"),
        getattr(reference, "name", "reference") if reference is not None else None,
        focus,
        len(pairs),
        pairs.source,
        defaults,
    )


def _default_layer(model: Any, method: str) -> int:
    import vlexplain as vx

    return int(vx.get_method(method).create(model).image_layer)  # type: ignore[attr-defined]
