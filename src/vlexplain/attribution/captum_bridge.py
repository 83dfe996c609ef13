"""The Captum bridge: ``method="captum:<Algorithm>"`` runs a Captum attribution algorithm on either
side of any dual encoder.

The pair's score is a differentiable function of one side's input, the other side's embedding
held fixed, so any Captum algorithm can explain it:

* image side: the input is the preprocessed pixels (B, 3, H, W); the attributions are reduced over
  colour channels (``reduce``: ``sum`` by default, the maximum for ``Saliency``, whose
  attributions are gradient magnitudes, as vlexplain's ``saliency`` does; perturbation algorithms
  give each feature one value, which fills its channels: ``mean`` keeps that value);
* text side: the input is the token input embeddings (B, T, D), summed over the embedding
  (``Saliency``: their L2 norm), as vlexplain's gradient methods do; SOS/EOS/padding are not shown;
* layer algorithms (``LayerGradCam``, ``LayerConductance`` ...) attribute to the output of block
  ``layer`` (``image_layer`` / ``text_layer``), with vlexplain's block numbering; a ViT's patch
  tokens are handed to Captum as a (B, D, gh, gw) feature map (prefix tokens pass around it), a
  text's tokens as (B, D, T), and the attributions are summed over channels;
* perturbation algorithms perturb the cells of the patch grid (``grid`` cells per side; 7 for CNN
  towers) or single tokens; baselines are ``mean`` (zeros in normalised space, Captum's default),
  ``black`` or ``blur`` for images and the pad token's embedding for tokens.

The score is the batch's target (cosine, logit, softmax, or any other target). Deterministic
algorithms explain the whole batch in one call; algorithms that draw from the global random
generator, or take a distribution of baselines built from each pair, run pair by pair under the
pair's seed, so a pair's map does not depend on the rest of the batch. Options pass through to
Captum's ``attribute`` (``n_steps``, ``n_samples``, ``perturbations_per_eval``, ``strides`` ...).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import MethodError, require
from ..models.base import DualEncoder, TextBatch, Tower, frozen
from .base import Bridge, Explainer, PairBatch, Side, check_layer, image_grid_size, register_bridge
from .captum_catalog import ALGORITHMS, Algorithm, refusal
from .perturbation import grid_feature_mask
from .smooth import check_smooth

PREFIX = "captum:"
#: Captum ``attribute`` arguments the bridge fills in itself
RESERVED = {
    "inputs", "baselines", "target", "additional_forward_args", "feature_mask", "layer_mask", "return_convergence_delta",
    "show_progress", "attribute_to_layer_input", "grad_kwargs", "kwargs", "custom_attribution_func",
    "return_input_shape", "verbose", "enable_cross_tensor_attribution", "use_cached_outputs", "interpretable_model",
    "similarity_func", "perturb_func", "nt_type", "nt_samples", "nt_samples_batch_size", "stdevs_nt",
}  # fmt: skip
#: constructor arguments of Captum classes the bridge fills in itself
RESERVED_INIT = {"forward_func", "model", "layer", "device_ids", "attribution_method"}
#: vlexplain's defaults where Captum's would be slow (one forward pass per perturbation)
DEFAULTS = {"perturbations_per_eval": 16}
REDUCE = ("sum", "mean", "max", "norm", "abs_sum")
IMAGE_BASELINES = ("mean", "black", "blur")
#: feature cells per side on CNN image towers (ViTs: the patch grid)
CNN_GRID = 7
#: captum:ShapleyValues enumerates every ordering: at most this many features
MAX_EXACT_FEATURES = 4


# --- forward functions ---------------------------------------------------------------------
class Probe(nn.Module):
    """Identity on a block's output in Captum's channel-first layout; layer algorithms hook it."""

    def forward(self, v: Tensor) -> Tensor:
        return v


def to_view(tower: Tower, h: Tensor, side: str) -> Tensor:
    """A block's output as Captum sees it: (B, C, h, w) maps; ViT patches (B, D, gh, gw); tokens (B, D, T)."""
    if h.dim() == 4:
        return h
    if side == "text":
        return h.transpose(1, 2)
    p = h[:, tower.num_prefix_tokens :]
    gh, gw = tower.grid_size(p.shape[1])
    return p.transpose(1, 2).reshape(p.shape[0], p.shape[2], gh, gw)


def from_view(tower: Tower, v: Tensor, h: Tensor, side: str) -> Tensor:
    """The inverse of ``to_view`` (prefix tokens taken from ``h``)."""
    if h.dim() == 4:
        return v
    if side == "text":
        return v.transpose(1, 2)
    return torch.cat([h[:, : tower.num_prefix_tokens], v.flatten(2).transpose(1, 2)], 1)


class PairScore(nn.Module):
    """The pair's score as a function of one side's input, the other embedding held fixed.

    ``forward(x, *rows)``: image side ``x`` = pixels (N, 3, H, W), ``rows`` = (other embedding,);
    text side ``x`` = token embeddings (N, T, D), ``rows`` = (ids, attention mask, pool index,
    content mask, other embedding). Every row tensor has N rows, so Captum can expand them.
    """

    def __init__(self, tower: Tower, side: str, target: Any, layer: int | None):
        super().__init__()
        self.tower, self.side, self.target, self.layer = tower, side, target, layer
        self.probe = Probe()

    def _on_block(self, i: int, h: Tensor, attn: Tensor | None) -> Tensor | None:
        if i != self.layer:
            return None
        return from_view(self.tower, self.probe(to_view(self.tower, h, self.side)), h, self.side)

    def forward(self, x: Tensor, *rows: Tensor) -> Tensor:
        cb = self._on_block if self.layer is not None else None
        if self.side == "image":
            return self.target(self.tower.encode(x, on_block=cb), rows[0])
        ids, am, pool, content, other = rows
        tb = TextBatch(ids, am, pool, content, [], [])
        return self.target(other, self.tower.encode(tb, inputs_embeds=x, on_block=cb))


# --- options -------------------------------------------------------------------------------
def _captum_options(algo: Algorithm) -> dict[str, Any]:
    """Option name -> default: the Captum class's constructor and ``attribute`` keywords that pass through."""
    cls = getattr(require("captum.attr", "captum"), algo.name)
    out: dict[str, Any] = {}
    for fn, reserved in ((cls.__init__, RESERVED_INIT), (cls.attribute, RESERVED)):
        for k, p in list(inspect.signature(fn).parameters.items())[1:]:
            if k in reserved or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            out[k] = None if p.default is inspect.Parameter.empty else p.default
    out.update({k: v for k, v in DEFAULTS.items() if k in out})
    return out


def bridge_options(algo: Algorithm) -> dict[str, Any]:
    """Every option of ``captum:<algo>`` with its default: the bridge's, then Captum's."""
    own: dict[str, Any] = {}
    if algo.layer:
        own.update(layer=None, image_layer=None, text_layer=None)
    if algo.baselines != "none":
        own["baseline"] = "mean"
    if algo.features in ("mask", "window", "layer_mask"):
        own["grid"] = 2 if algo.name == "ShapleyValues" else None
    own["reduce"] = None
    cap = _captum_options(algo)
    if algo.kind == "gradient" and "n_samples" not in cap:
        own.update(smooth=None, n_samples=8, stdev=0.15)
    return {**own, **cap}


def _modules_of(tower: Tower) -> set[str]:
    return {type(m).__name__ for m in tower.modules()}


def _deeplift_failure(cls: type[CaptumMethod], model: DualEncoder, side: Side) -> str | None:
    """Captum's reason when its DeepLift hooks cannot run on this tower (a ReLU-like module it finds
    no recorded input for: reused, or bypassed by the tower's forward), from one probe pair; cached."""
    cache: dict[tuple[str, str], str | None] = model.__dict__.setdefault("_vx_deeplift_probe", {})
    key = (cls.name, side)
    if key not in cache:
        from .targets import make_target

        texts = model.tokenize(["a photo"]).to(model.device)
        with torch.no_grad():
            px = torch.zeros(1, 3, *model.input_size, device=model.device, dtype=model.dtype)
            ie, te = model.encode_image(px), model.encode_text(texts)
        batch = PairBatch(px, texts, ie, te, make_target(model), [0])
        try:
            with frozen(model):
                cls(model)._attribute(batch, side)
            cache[key] = None
        except RuntimeError as e:
            cache[key] = str(e).split(". ")[0].strip()
    return cache[key]


def _lrp_gap(tower: Tower) -> list[str]:
    """Leaf module types of ``tower`` that Captum's LRP has no rule for."""
    from captum.attr._core import lrp

    known = set(lrp.SUPPORTED_LAYERS_WITH_RULES) | set(lrp.SUPPORTED_NON_LINEAR_LAYERS)
    return sorted({type(m).__name__ for m in tower.modules() if not list(m.children()) and type(m) not in known})


# --- the explainer -------------------------------------------------------------------------
class CaptumMethod(Explainer):
    """A Captum attribution algorithm run through the bridge (one subclass per algorithm).

    Options are the bridge's (``layer``, ``baseline``, ``grid``, ``reduce``, ``smooth`` ...) and
    the algorithm's own constructor and ``attribute`` keywords; see the module docstring.
    """

    algorithm: ClassVar[Algorithm]

    def __init__(self, model: DualEncoder, **options: Any):
        Explainer.__init__(self, model)
        algo = self.algorithm
        opts = {**bridge_options(algo), **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}}
        if opts.get("baseline", "mean") not in IMAGE_BASELINES:
            raise MethodError(
                f"{self.name}: baseline must be one of {', '.join(IMAGE_BASELINES)}, got {opts['baseline']!r}"
            )
        if opts.get("reduce") not in (None, *REDUCE):
            raise MethodError(f"{self.name}: reduce must be one of {', '.join(REDUCE)}, got {opts['reduce']!r}")
        grid = opts.get("grid")
        if grid is not None and (not isinstance(grid, int) or isinstance(grid, bool) or grid < 1):
            raise MethodError(f"{self.name}: grid must be an integer >= 1 (cells per side), got {grid!r}")
        if algo.name == "ShapleyValues" and (grid is None or grid * grid > MAX_EXACT_FEATURES):
            raise MethodError(
                f"{self.name} enumerates every ordering of the n image regions (n! forward passes): "
                f"it takes grid=1 or 2; use captum:ShapleyValueSampling for finer regions"
            )
        if "smooth" in opts:
            check_smooth(self.name, opts["smooth"], opts["n_samples"], opts["stdev"])
        for k in ("n_steps", "n_samples", "perturbations_per_eval"):
            v = opts.get(k)
            if k in opts and v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise MethodError(f"{self.name}: {k} must be an integer >= 1, got {v!r}")
        if algo.layer:
            lay = opts["layer"]
            cnn_last = model.image.num_blocks - 1 if model.image.kind == "cnn" and "GradCam" in algo.name else None
            img = opts["image_layer"] if opts["image_layer"] is not None else lay
            txt = opts["text_layer"] if opts["text_layer"] is not None else lay
            self.layers = {"image": check_layer(model.image, img, cnn_last), "text": check_layer(model.text, txt)}
        self.options = opts

    def settings(self) -> dict[str, Any]:
        out = {}
        for k, v in self.options.items():
            out[k] = (
                list(v)
                if isinstance(v, tuple)
                else v
                if isinstance(v, (int, float, str, bool, type(None)))
                else repr(v)
            )
        if self.algorithm.layer:
            out.update(image_layer=self.layers["image"], text_layer=self.layers["text"])
        return out

    @classmethod
    def why_not(cls, model: DualEncoder, side: Side) -> str | None:
        why = super().why_not(model, side)
        algo = cls.algorithm
        if why is not None:
            if side not in algo.sides and algo.name == "ShapleyValues":
                return f"{why}: it enumerates every ordering of the features, too many for a text's tokens; use captum:ShapleyValueSampling"
            if side not in algo.sides:
                return f"{why}: it upsamples a Grad-CAM map to the image's pixels"
            return why
        tower = model.tower(side)
        if algo.rule_modules and not (_modules_of(tower) & set(algo.rule_modules)):
            return (
                f"{cls.name} changes the backward pass of {'/'.join(algo.rule_modules[:3])}... modules; the {side} "
                f"tower of this model has none, so it would return plain gradients"
            )
        if algo.name.startswith(("DeepLift", "LayerDeepLift")):
            failure = _deeplift_failure(cls, model, side)
            if failure is not None:
                return f"Captum's {algo.name} cannot run on the {side} tower of this model: {failure}"
        if algo.lrp:
            gap = _lrp_gap(tower)
            if gap:
                more = f" and {len(gap) - 3} other module types" if len(gap) > 3 else ""
                return f"{cls.name} needs a propagation rule for every module; Captum has none for {', '.join(gap[:3])}{more} of the {side} tower"
        return None

    # --- inputs of one side ------------------------------------------------------------------
    def _side_inputs(self, batch: PairBatch, side: Side) -> tuple[Tensor, tuple[Tensor, ...], PairScore]:
        """(input x, per-row forward arguments, score module) of one side."""
        layer = self.layers[side] if self.algorithm.layer else None
        tower = self.model.tower(side)
        fwd = PairScore(tower, side, batch.target, layer)
        if side == "image":
            return batch.pixels.detach().clone(), (batch.text_emb,), fwd
        tb = batch.texts
        x = batch.token_embeddings(tower).clone()
        return x, (tb.ids, tb.attention_mask, tb.pool_index, tb.content_mask, batch.image_emb), fwd

    def _baselines(self, batch: PairBatch, side: Side, x: Tensor) -> Tensor | None:
        """One reference per pair (B, ...), or a distribution (K, ...) for a single pair."""
        kind = self.algorithm.baselines
        if kind == "none":
            return None
        from .integrated_gradients import image_baseline as ig_baseline
        from .integrated_gradients import text_baseline
        from .perturbation import image_baseline as blur_or_mean

        if side == "text":
            pad = text_baseline(self.model, batch.texts, x)
            if kind == "one":
                return pad
            zero = torch.where(batch.texts.content_mask[..., None], torch.zeros_like(x), x)
            return torch.cat([pad, zero])  # (2, T, D) for one pair
        refs = {
            "mean": lambda: torch.zeros_like(x),
            "black": lambda: ig_baseline(self.model, x, "black", [], 0.0),
            "blur": lambda: blur_or_mean(x, "blur"),
        }
        if kind == "one":
            return refs[self.options["baseline"]]()
        return torch.cat([refs[k]() for k in IMAGE_BASELINES])  # (3, 3, H, W) for one pair

    def _grid(self) -> tuple[int, int]:
        g = self.options.get("grid")
        if g is not None:
            return g, g
        return (CNN_GRID, CNN_GRID) if self.model.image.kind != "vit" else image_grid_size(self.model)

    def _feature_kwargs(self, batch: PairBatch, side: Side, x: Tensor) -> dict[str, Any]:
        """feature_mask / sliding windows / layer_mask for the algorithm."""
        feats = self.algorithm.features
        if feats == "mask":
            if side == "image":
                fm = grid_feature_mask(tuple(x.shape[-2:]), self._grid(), x.device)  # type: ignore[arg-type]
                return {"feature_mask": fm.expand(x.shape[0], 1, *fm.shape).contiguous()}
            cm = batch.texts.content_mask
            ids = torch.where(cm, cm.long().cumsum(1), torch.zeros_like(cm, dtype=torch.long))  # 1..n, 0 elsewhere
            return {"feature_mask": ids[..., None]}
        if feats == "window":
            if side == "text":  # one token at a time over its whole embedding
                return {"sliding_window_shapes": (1, x.shape[-1]), "strides": (1, x.shape[-1])}
            H, W = x.shape[-2:]
            gh, gw = self._grid()
            win = (3, -(-H // gh), -(-W // gw))
            shapes = self.options.get("sliding_window_shapes") or win
            return {"sliding_window_shapes": tuple(shapes), "strides": self.options.get("strides") or tuple(shapes)}
        if feats == "layer_mask":
            return {"layer_mask": self._layer_mask(batch, side)}
        return {}

    def _layer_mask(self, batch: PairBatch, side: Side) -> Tensor:
        """(1, 1, *positions) groups of a block's output positions (cells of ``grid`` per side, or each position)."""
        dev = batch.pixels.device
        if side == "text":
            return torch.arange(batch.texts.ids.shape[1], device=dev).view(1, 1, -1)
        with torch.no_grad():
            fwd = PairScore(self.model.image, "image", batch.target, self.layers["image"])
            seen: dict[str, Tensor] = {}
            handle = fwd.probe.register_forward_hook(lambda m, i, o: seen.setdefault("v", o))
            try:
                fwd(batch.pixels[:1], batch.text_emb[:1])
            finally:
                handle.remove()
        hw = tuple(seen["v"].shape[2:])
        g = self.options.get("grid")
        return grid_feature_mask(hw, (g, g) if g else hw, dev).view(1, 1, *hw)  # type: ignore[arg-type]

    # --- running -------------------------------------------------------------------------------
    def _attribute(self, batch: PairBatch, side: Side) -> Tensor:
        captum_attr = require("captum.attr", "captum")
        algo, opts = self.algorithm, self.options
        x, rows, fwd = self._side_inputs(batch, side)
        names = set(_captum_options(algo))
        init = {
            k: opts[k] for k in inspect.signature(getattr(captum_attr, algo.name).__init__).parameters if k in names
        }
        call = {k: v for k, v in opts.items() if k in names and k not in init}
        call.update(self._feature_kwargs(batch, side, x))
        base = self._baselines(batch, side, x)
        if base is not None:
            call["baselines"] = base
        if algo.kind != "activation":
            call["target"] = None
        cls = getattr(captum_attr, algo.name)
        obj = cls(fwd, fwd.probe, **init) if algo.layer else cls(fwd, **init)
        if opts.get("smooth") is not None:
            obj = captum_attr.NoiseTunnel(obj)
            rng = float(x.max() - x.min())
            call.update(nt_type=opts["smooth"], nt_samples=opts["n_samples"], stdevs=opts["stdev"] * rng)
        if algo.kind == "gradient":
            x.requires_grad_(True)  # (a copy) Captum would set it and warn
        with torch.enable_grad():
            out = obj.attribute(x, additional_forward_args=rows, **call)
        out = out[0] if isinstance(out, tuple) else out
        return out.detach()

    def _reduce(self, attr: Tensor, side: Side) -> Tensor:
        """Raw attributions -> (B, H, W) / (B, gh, gw) maps or (B, T) token scores."""
        how = self.options.get("reduce") or self.algorithm.reduce
        if self.options.get("reduce") is None and self.algorithm.features != "none" and how == "sum":
            how = "mean"  # a perturbed feature's value fills all its channels / embedding dimensions
        if how == "saliency":  # vlexplain's saliency: max over pixel channels, L2 norm over the embedding
            how = "max" if side == "image" else "norm"
        layer_out = self.algorithm.layer and self.algorithm.name != "GuidedGradCam"
        dim = 1 if side == "image" or layer_out else -1  # layer outputs are channel-first (B, C, ...)
        if how == "sum":
            return attr.sum(dim)
        if how == "mean":
            return attr.mean(dim)
        if how == "abs_sum":
            return attr.abs().sum(dim)
        if how == "max":
            return attr.abs().amax(dim)
        return attr.norm(dim=dim)

    def _run(self, batch: PairBatch, side: Side) -> Tensor:
        algo = self.algorithm
        alone = algo.random or algo.baselines == "distribution" or self.options.get("smooth")
        if not alone and not (side == "text" and algo.whole_text):
            return self._reduce(self._attribute(batch, side), side)
        maps = []
        for i, seed in enumerate(batch.seeds):  # each pair alone, under its own seed, without padding
            one = _select(batch, i, unpadded=side == "text")
            with seeded(seed, batch.pixels.device):
                m = self._reduce(self._attribute(one, side), side)
            if side == "text":  # back to the batch's padded length
                m = torch.nn.functional.pad(m, (0, batch.texts.ids.shape[1] - m.shape[1]))
            maps.append(m)
        return torch.cat(maps)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        return self._run(batch, "image").to(batch.pixels.dtype)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        return self._run(batch, "text").to(batch.image_emb.dtype)


def _select(batch: PairBatch, i: int, unpadded: bool = False) -> PairBatch:
    """Pair ``i`` of a batch as a batch of one (``unpadded``: its text cut after its last real token)."""
    tb = batch.texts.select([i])
    emb = None if batch.text_embeds is None else batch.text_embeds[i : i + 1]
    if unpadded:
        n = int(tb.attention_mask[0].nonzero().max()) + 1
        tb = TextBatch(
            tb.ids[:, :n], tb.attention_mask[:, :n], tb.pool_index, tb.content_mask[:, :n], tb.tokens, tb.texts
        )
        emb = None if emb is None else emb[:, :n]
    return PairBatch(
        batch.pixels[i : i + 1],
        tb,
        batch.image_emb[i : i + 1],
        batch.text_emb[i : i + 1],
        batch.target,
        [batch.seeds[i]],
        {},
        emb,
    )


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global generators Captum draws from (torch's, NumPy's, Python's) without disturbing
    the caller's state."""
    import random

    import numpy as np

    devices = [device] if device.type == "cuda" else []
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed) % 2**63)
            np.random.seed(int(seed) % 2**32)
            random.seed(int(seed))
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


# --- the registry bridge ---------------------------------------------------------------------
_CLASSES: dict[str, type[CaptumMethod]] = {}


def _make_class(algo: Algorithm) -> type[CaptumMethod]:
    """A CaptumMethod subclass for one algorithm, whose ``__init__`` signature lists its options."""
    opts = bridge_options(algo)

    def __init__(self, model, **options):
        CaptumMethod.__init__(self, model, **options)

    params = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in opts.items()]
    __init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    doc = f"Captum's ``{algo.name}`` through the bridge: {algo.summary}.\n\n{CaptumMethod.__doc__}"
    attrs = {
        "name": PREFIX + algo.name,
        "summary": f"Captum {algo.name}: {algo.summary}",
        "paper": algo.paper,
        "sides": algo.sides,
        "needs_gradients": algo.kind == "gradient",
        "algorithm": algo,
        "__init__": __init__,
        "__doc__": doc,
        "__module__": __name__,
    }
    return type(f"Captum{algo.name}", (CaptumMethod,), attrs)


def captum_method(name: str) -> type[CaptumMethod]:
    """The method class of ``captum:<Algorithm>``; a one-line MethodError for unknown or refused names."""
    algo_name = name[len(PREFIX) :]
    reason = refusal(algo_name)
    if reason is not None:
        raise MethodError(f"{name} cannot explain an image-text pair: {reason}")
    if algo_name not in ALGORITHMS:
        captum_attr = require("captum.attr", "captum")
        near = "" if hasattr(captum_attr, algo_name) else " (no such class in captum.attr)"
        raise MethodError(f"unknown Captum algorithm {algo_name!r}{near}; available: {', '.join(captum_names())}")
    require("captum.attr", "captum")
    if algo_name not in _CLASSES:
        _CLASSES[algo_name] = _make_class(ALGORITHMS[algo_name])
    return _CLASSES[algo_name]


def captum_names() -> list[str]:
    """``captum:<Algorithm>`` for every algorithm the bridge runs (none when Captum is missing)."""
    try:
        import captum.attr as captum_attr
    except ImportError:
        return []
    return sorted(PREFIX + n for n in ALGORITHMS if hasattr(captum_attr, n))


register_bridge(Bridge(PREFIX, captum_method, captum_names))
