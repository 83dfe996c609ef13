"""Explainer base class, the method registry and the Explanation result object.

A method is one file with one class::

    @register_method
    class MyMethod(Explainer):
        name = "my_method"
        def attribute_image(self, batch: PairBatch) -> Tensor: ...   # (B, gh, gw) or (B, H, W)
        def attribute_text(self, batch: PairBatch) -> Tensor: ...    # (B, T) per token position

The base class handles batching, freezing the model, seeding, upsampling and building
[`Explanation`][vlexplain.attribution.base.Explanation] objects; the CLI, the web explorer, benchmarks and contract tests read the
registry.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder, TextBatch, Tower, frozen
from .targets import Contrast, Target, Term

Side = Literal["image", "text"]
SIDES: tuple[Side, Side] = ("image", "text")


@dataclass
class PairBatch:
    """What a method sees: B image-text pairs and their fixed embeddings.

    Attributes:
        pixels: (B, 3, H, W) preprocessed images.
        texts: the tokenised texts (B rows).
        image_emb / text_emb: (B, d) unit-norm embeddings of the unmodified inputs (no grad).
        target: the score to explain, ``target(image_emb, text_emb) -> (B,)``.
        seeds: one seed per pair; stochastic methods draw each pair's noise from its own
            generator so that a pair's result does not depend on the rest of the batch.
        hidden: side -> (block, hidden state after that block) computed with the embeddings, for
            methods that asked for it ([`Explainer.hidden_layer`][vlexplain.attribution.base.Explainer.hidden_layer]); empty otherwise.
        contrast: with the ``contrast`` target, what is subtracted from each pair's score (else None).
        text_embeds: (B, T, D) token input embeddings to use instead of looking up ``texts``'
            (SmoothGrad's noisy copies); None: the tower's own lookup.

    Methods score the inputs they vary with [`score_image`][vlexplain.attribution.base.PairBatch.score_image] /
    [`score_text`][vlexplain.attribution.base.PairBatch.score_text] (the target against the fixed other
    side, a contrast's difference included), or read the score as cosines with fixed embeddings
    ([`terms`][vlexplain.attribution.base.PairBatch.terms]).
    """

    pixels: Tensor
    texts: TextBatch
    image_emb: Tensor
    text_emb: Tensor
    target: Target
    seeds: list[int]
    hidden: dict[str, tuple[int, Tensor]] = field(default_factory=dict)
    contrast: Contrast | None = None
    text_embeds: Tensor | None = None

    def score_image(self, e: Tensor, rows: Tensor | None = None) -> Tensor:
        """(N,) scores of image embeddings ``e`` (N, d) against the pairs' fixed text side.

        Args:
            e: un-normalised embeddings of (perturbed, interpolated ...) images.
            rows: (N,) the pair each row belongs to (None: N == B, in order).
        """
        return self._score("image", e, rows)

    def score_text(self, e: Tensor, rows: Tensor | None = None) -> Tensor:
        """(N,) scores of text embeddings ``e`` (N, d) against the pairs' fixed image side (as ``score_image``)."""
        return self._score("text", e, rows)

    def terms(self, side: Side) -> tuple[list[Term], Tensor]:
        """The score as a function of the embedding ``e`` of ``side``:
        ``sum_k c_k cos(e, o_k) + offset`` -> (``[(c_k, o_k (B, d))]``, offset (B,)). Without a
        contrast: the cosine with the other side's embedding (logit and softmax targets are not such
        sums; methods that read terms explain the cosine for them)."""
        if self.contrast is not None:
            return self.contrast.terms(side, self.image_emb, self.text_emb)
        other = self.text_emb if side == "image" else self.image_emb
        return [(1.0, other)], torch.zeros(len(self), dtype=other.dtype, device=other.device)

    def _score(self, side: Side, e: Tensor, rows: Tensor | None) -> Tensor:
        def pick(x: Tensor) -> Tensor:
            return x if rows is None else x[rows]

        def score(o: Tensor) -> Tensor:
            return self.target(e, o) if side == "image" else self.target(o, e)

        if self.contrast is None:
            return score(pick(self.text_emb if side == "image" else self.image_emb))
        terms, offset = self.terms(side)
        out = pick(offset).to(e.dtype)
        for c, o in terms:
            out = out + c * score(pick(o))
        return out

    def token_embeddings(self, tower: Tower) -> Tensor:
        """(B, T, D) the text tower's input embeddings of this batch (``text_embeds`` when set), no grad."""
        if self.text_embeds is not None:
            return self.text_embeds.detach()
        with torch.no_grad():
            return tower.token_embeddings(self.texts)

    def hidden_at(self, side: str, layer: int) -> Tensor | None:
        """The no-grad hidden state of ``side`` after block ``layer``, if it came with the batch."""
        got = self.hidden.get(side)
        return got[1] if got is not None and got[0] == layer else None

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def generators(self, device: torch.device | str | None = None) -> list[torch.Generator]:
        dev = torch.device(device) if device is not None else self.pixels.device
        return [torch.Generator(device=dev).manual_seed(s) for s in self.seeds]


class Explainer:
    """Base class of attribution methods. Subclasses set ``name`` and override the hooks.

    Options are the keyword arguments of ``__init__`` after ``model``; they are recorded in
    every Explanation's ``settings``.
    """

    name: ClassVar[str] = ""
    #: short description for listings
    summary: ClassVar[str] = ""
    #: the paper that introduced the method (authors, title, venue year), for listings
    paper: ClassVar[str] = ""
    #: the method needs attention probabilities (ViT / transformer towers only)
    needs_attention: ClassVar[bool] = False
    #: the method needs gradients through the model
    needs_gradients: ClassVar[bool] = True
    #: sides the method explains
    sides: ClassVar[tuple[Side, ...]] = ("image", "text")
    #: the options that set how much work a pair takes, with the largest value the web explorer
    #: runs (larger values sent to it are lowered to these; the API and the command line take any)
    web_limits: ClassVar[dict[str, int | float]] = {}
    #: how the method explains the ``contrast`` target, in one line for the docs ("": it has no
    #: contrastive form and contrasts are refused with ``no_contrast``). A method declares one when it
    #: scores inputs only through ``PairBatch.score_image`` / ``score_text`` / ``terms``.
    contrast_form: ClassVar[str] = ""
    #: why there is no contrastive form (refusals say it)
    no_contrast: ClassVar[str] = "it does not say how it explains a difference of two scores"

    def __init__(self, model: DualEncoder, **options: Any):
        if options:
            raise MethodError(f"unknown option(s) for {self.name}: {', '.join(sorted(options))}")
        self.model = model

    @classmethod
    def checked_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The method's options: known keys (its ``__init__``'s), the declared types, finite numbers
        (``vlexplain.validate.check_options``). Raises [`MethodError`][vlexplain.MethodError];
        returns the checked options (see ``vlexplain.validate.check_value``)."""
        from ..validate import check_options, signature_options

        known, open_ended = signature_options(cls.__init__, skip=2)
        open_ended = open_ended and cls.__init__ is not Explainer.__init__  # the base takes no option
        return check_options(options, known, open_ended, cls.name, MethodError)

    @classmethod
    def create(cls, model: DualEncoder, **options: Any) -> Explainer:
        """Build the method, turning unknown or bad options into a clear [`MethodError`][vlexplain.MethodError].

        The options first pass ``checked_options`` (known keys, the types ``__init__`` declares,
        finite numbers), then the method's own range checks."""
        options = cls.checked_options(options)
        try:
            return cls(model, **options)
        except TypeError as e:
            raise MethodError(f"bad options for {cls.name}: {e}") from None

    # --- hooks -------------------------------------------------------------------------------
    def attribute_image(self, batch: PairBatch) -> Tensor:
        """(B, gh, gw) token-grid map or (B, H, W) pixel map, raw values."""
        raise NotImplementedError

    def attribute_text(self, batch: PairBatch) -> Tensor:
        """(B, T) score per token position (SOS/EOS/padding are dropped by the caller)."""
        raise NotImplementedError

    def hidden_layer(self, side: Side) -> int | None:
        """The block whose output ``attribute_image`` / ``attribute_text`` reads first, if
        any: ``run_explainer`` then keeps it from the embedding pass (``PairBatch.hidden``)
        instead of the method running the tower up to it again."""
        return None

    @classmethod
    def cost(cls, options: dict[str, Any]) -> float:
        """About how many model passes (forward or backward, summed over both sides) one pair takes
        with ``options``; the explorer bounds a request's total. Default: a forward and a backward
        pass per side."""
        return 4.0

    @classmethod
    def option(cls, options: dict[str, Any], name: str) -> Any:
        """The value of option ``name``: as given in ``options``, else ``__init__``'s default."""
        if name in options:
            return options[name]
        p = inspect.signature(cls.__init__).parameters.get(name)
        return None if p is None or p.default is inspect.Parameter.empty else p.default

    # --- applicability ------------------------------------------------------------------------
    @classmethod
    def why_not(cls, model: DualEncoder, side: Side) -> str | None:
        """None if the method applies to this side of this model, else the reason."""
        if side not in cls.sides:
            return f"{cls.name} has no {side} side"
        tower = model.tower(side)
        if cls.needs_attention and not tower.has_attention:
            return (
                f"{cls.name} needs attention probabilities; the {side} tower of this model is a "
                f"{tower.kind.upper()} without token attention{usable_methods_hint(model, side)}"
            )
        return None

    @classmethod
    def why_not_contrast(cls) -> str | None:
        """None if the method explains the ``contrast`` target, else the reason."""
        if cls.contrast_form:
            return None
        ok = ", ".join(n for n in list_methods() if _METHODS[n].contrast_form)
        return f"{cls.name} cannot explain a contrast: {cls.no_contrast} (methods that can: {ok})"

    def settings(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        out = {}
        for k in list(sig.parameters)[2:]:
            if sig.parameters[k].kind is inspect.Parameter.VAR_KEYWORD:
                continue
            v = getattr(self, k, sig.parameters[k].default)
            out[k] = v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v)
        return out


_METHODS: dict[str, type[Explainer]] = {}
_LISTING = threading.local()  # .on while usable_methods_hint asks every method (no nested listing; per thread)


_HINT = " (methods for this side: "


def brief_reason(why: str) -> str:
    """A refusal without its list of the methods that apply (for tables that show that already)."""
    return why.split(_HINT, 1)[0]


def usable_methods_hint(model: DualEncoder, side: Side) -> str:
    """`` (methods for this side: a, b, ...)``: the registered methods that apply to ``side`` of
    ``model``, for refusals to name the alternatives ('' while already listing)."""
    if getattr(_LISTING, "on", False):
        return ""
    _LISTING.on = True
    try:
        usable = [n for n, c in sorted(_METHODS.items()) if c.why_not(model, side) is None]
    finally:
        _LISTING.on = False
    return f"{_HINT}{', '.join(usable)})" if usable else ""


@dataclass(frozen=True)
class Bridge:
    """Methods of another library, named ``prefix + name`` (``captum:Occlusion``) and built on demand.

    Attributes:
        prefix: e.g. ``"captum:"``.
        resolve: ``name -> Explainer class`` for a full name; raises MethodError (unknown or not
            applicable names, with the reason) or MissingExtraError (the library is not installed).
        names: the full names that can be resolved (empty when the library is not installed).
    """

    prefix: str
    resolve: Callable[[str], type[Explainer]]
    names: Callable[[], list[str]]


_BRIDGES: dict[str, Bridge] = {}


def register_bridge(bridge: Bridge) -> None:
    """Add a bridge: ``get_method`` resolves its names, ``list_methods(bridged=True)`` lists them."""
    _BRIDGES[bridge.prefix] = bridge


def _bridge_of(name: str) -> Bridge | None:
    return next((b for p, b in _BRIDGES.items() if name.startswith(p)), None)


def register_method(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError("an Explainer needs a name")
    _METHODS[cls.name] = cls
    return cls


def _load_builtin_methods() -> None:
    import importlib
    import pkgutil

    from .. import attribution

    for m in pkgutil.iter_modules(attribution.__path__):
        if m.name not in ("base", "targets", "api", "upsample", "contrast", "smooth", "captum_catalog"):
            importlib.import_module(f"{attribution.__name__}.{m.name}")


def list_methods(bridged: bool = False) -> list[str]:
    """Names of the registered attribution methods; with ``bridged``, also those of the bridges to
    other libraries (``captum:Occlusion`` ...) that are installed."""
    _load_builtin_methods()
    out = sorted(_METHODS)
    if bridged:
        for b in _BRIDGES.values():
            out += b.names()
    return out


def get_method(name: str) -> type[Explainer]:
    """The method class registered under ``name`` (or built by a bridge, ``captum:NAME``)."""
    _load_builtin_methods()
    bridge = _bridge_of(name)
    if bridge is not None:
        return bridge.resolve(name)
    if name not in _METHODS:
        raise MethodError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def methods_for(model: DualEncoder, bridged: bool = False) -> dict[str, list[Side]]:
    """Which sides each registered method (with ``bridged``: and bridged method) applies to on this model."""
    out: dict[str, list[Side]] = {}
    for n in list_methods(bridged):
        cls = get_method(n)
        sides = [s for s in SIDES if cls.why_not(model, s) is None]
        if sides:
            out[n] = sides
    return out


@dataclass
class ContrastInfo:
    """What a contrastive explanation explained: ``difference = score - versus_score``.

    Attributes:
        kind: ``text`` ("why the text rather than ``versus``") or ``image`` ("why the image
            ranks above ``versus`` for the text").
        versus: the versus text, or the versus image's name (its file name; ``the versus image``
            for an image given in memory).
        score: the cosine of the explained pair (for ``image``: image A's, the image the call explained).
        versus_score: the cosine of the subtracted pair (image with the versus text, or the
            versus image with the text).
        role: ``explained`` for the image the call explained; ``versus`` for the map on the
            versus image ([`Explanation.versus`][vlexplain.Explanation]), which explains the same
            difference (its positive values lower the versus image's score).
    """

    kind: Literal["text", "image"]
    versus: str
    score: float
    versus_score: float
    role: Literal["explained", "versus"] = "explained"

    @property
    def difference(self) -> float:
        return self.score - self.versus_score

    def label(self, text: str) -> str:
        """One line for titles: what was contrasted, with the scores."""
        nums = f"cosine {self.score:.3f} \u2212 {self.versus_score:.3f} = {self.difference:+.3f}"
        if self.kind == "text":
            return f"\u201c{text}\u201d rather than \u201c{self.versus}\u201d   {nums}"
        return f"this image rather than {self.versus} for \u201c{text}\u201d   {nums}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "difference": self.difference}


@dataclass
class Explanation:
    """The attribution of one image-text pair.

    Attributes:
        image_map: (H, W) map at the model's input resolution, raw values (None: no image side).
        patch_map: (gh, gw) map at the token-grid resolution (None: no image side).
        token_scores: (n,) one score per shown token (None: no text side).
        tokens: the n shown tokens (SOS/EOS/padding left out).
        score: cosine similarity of the pair.
        method: the method's registry name.
        settings: the method's options and the run's seed and target.
        text: the text that was explained.
        pixels: (3, H, W) the preprocessed image, for display.
        mean, std: the normalisation of ``pixels``.
        seconds: wall-clock time spent on this pair (batch time / batch size).
        contrast: for the ``contrast`` target, what was contrasted and the scores (else None);
            the maps then explain ``contrast.difference``.
        versus: for a contrast of two images, the map of the same difference on the versus
            image (an Explanation whose ``contrast.role`` is ``versus``); else None.
        map_resolution: "patch" when the method scored the token grid (``image_map`` is its
            bilinear upsampling), "pixel" when it scored pixels (``patch_map`` is their area mean).
    """

    image_map: Tensor | None
    patch_map: Tensor | None
    token_scores: Tensor | None
    tokens: list[str]
    score: float
    method: str
    settings: dict[str, Any]
    text: str = ""
    pixels: Tensor | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)
    contrast: ContrastInfo | None = None
    versus: Explanation | None = None
    map_resolution: Literal["patch", "pixel"] = "patch"

    @property
    def native_map(self) -> Tensor | None:
        """The image map at the resolution the method computed it: ``patch_map`` or ``image_map``."""
        return self.image_map if self.map_resolution == "pixel" else self.patch_map

    def image_rgb(self) -> Tensor:
        """(3, H, W) the image in [0, 1] as the model saw it."""
        from ..images import denormalize

        assert self.pixels is not None
        return denormalize(self.pixels, self.mean, self.std)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (maps as nested lists at patch resolution)."""
        return {
            "method": self.method,
            "text": self.text,
            "score": self.score,
            "seconds": self.seconds,
            "settings": self.settings,
            "tokens": self.tokens,
            "token_scores": None if self.token_scores is None else self.token_scores.float().cpu().tolist(),
            "patch_map": None if self.patch_map is None else self.patch_map.float().cpu().tolist(),
            "image_map_shape": None if self.image_map is None else list(self.image_map.shape),
            **({} if self.contrast is None else {"contrast": self.contrast.to_dict()}),
            **({} if self.versus is None else {"versus": self.versus.to_dict()}),
        }

    # Display lives in vlexplain.viz, which knows explanations only through its Displayable
    # protocol; these methods import it on use, so the dependency runs one way and importing
    # attribution never loads viz (tests/test_layout.py).
    def save(self, path_prefix: str) -> list[str]:
        """Write ``PREFIX_overlay.png``, ``PREFIX_text.html``, ``PREFIX_text.png`` and ``PREFIX.json``."""
        from ..viz.save import save_explanation

        return save_explanation(self, path_prefix)

    def to_html(self) -> str:
        from ..viz.save import explanation_html

        return explanation_html(self)

    def _repr_html_(self) -> str:  # notebooks
        return self.to_html()


def check_layer(tower: Tower, layer: int | None, default: int | None = None, lowest: int = 0) -> int:
    """Resolve a block index (None: ``default``, else the tower's ``default_layer()``); raise
    MethodError unless ``lowest <= layer < tower.num_blocks`` (-1 names the input of block 0)."""
    if layer is None:
        return tower.default_layer() if default is None else default
    n = tower.num_blocks
    if not isinstance(layer, int) or not lowest <= layer < n:
        note = "; -1 is the input of block 0" if lowest < 0 else ""
        raise MethodError(f"layer {layer} is out of range for the {tower.modality} tower ({lowest}..{n - 1}{note})")
    return layer


def upsample_grid(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, gh, gw) -> (B, H, W), bilinear."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0].to(maps.dtype)


def pool_to_grid(maps: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, H, W) pixel maps -> (B, gh, gw) by area averaging."""
    return F.adaptive_avg_pool2d(maps[:, None].float(), grid)[:, 0].to(maps.dtype)


def image_grid_size(model: DualEncoder) -> tuple[int, int]:
    """The image tower's token grid (ViT patches; CNN: the M2IB layer's feature map)."""
    tower: Tower = model.image
    cached = getattr(model, "_vx_grid_size", None)
    if cached is not None:
        return cached
    with torch.no_grad():
        x = torch.zeros(1, 3, *model.input_size, device=model.device, dtype=model.dtype)
        h = tower.encode(x, stop=tower.default_layer())
    if h.dim() == 4:
        grid = int(h.shape[2]), int(h.shape[3])
    else:
        grid = tower.grid_size(h.shape[1] - tower.num_prefix_tokens)
    object.__setattr__(model, "_vx_grid_size", grid)
    return grid


def run_explainer(
    explainer: Explainer,
    pixels: Tensor,
    texts: TextBatch,
    target: Target,
    seeds: Sequence[int],
    sides: Sequence[Side],
) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """Run one batch; returns (image maps (B,gh,gw) or (B,H,W), token scores (B,T), scores (B,))."""
    img, txt, ie, te = _run(explainer, pixels, texts, target, seeds, sides, None)
    return img, txt, (ie * te).sum(-1)


def run_contrast(
    explainer: Explainer,
    pixels: Tensor,
    texts: TextBatch,
    target: Target,
    seeds: Sequence[int],
    sides: Sequence[Side],
    contrast: Contrast,
) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor]:
    """``run_explainer`` for the ``contrast`` target; returns (image maps, token scores, the pairs'
    unit-norm image and text embeddings (B, d))."""
    return _run(explainer, pixels, texts, target, seeds, sides, contrast)


def _run(
    explainer: Explainer,
    pixels: Tensor,
    texts: TextBatch,
    target: Target,
    seeds: Sequence[int],
    sides: Sequence[Side],
    contrast: Contrast | None,
) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor]:
    model = explainer.model
    hidden: dict[str, tuple[int, Tensor]] = {}

    def embed(side: Side, x: Any) -> Tensor:
        tower = model.tower(side)
        layer = explainer.hidden_layer(side) if side in sides else None
        # (not at the last block: the full encode computes only the pooled row there)
        if layer is None or not -1 <= layer < tower.num_blocks - 1:
            return tower.encode(x)
        h = tower.encode(x, stop=layer)
        hidden[side] = (layer, h)
        return tower.encode(x, start=layer, hidden=h)  # the same operations as one encode

    with frozen(model):
        with torch.no_grad():
            ie = F.normalize(embed("image", pixels), dim=-1)
            te = F.normalize(embed("text", texts), dim=-1)
        batch = PairBatch(pixels, texts, ie, te, target, list(seeds), hidden, contrast)
        img = explainer.attribute_image(batch).detach() if "image" in sides else None
        txt = explainer.attribute_text(batch).detach() if "text" in sides else None
    return img, txt, ie, te


def replace_settings(e: Explanation, **kw: Any) -> Explanation:
    return dataclasses.replace(e, settings={**e.settings, **kw})
