"""M2IB: multi-modal information bottleneck attribution (Wang, Rudner & Wilson, NeurIPS 2023).

For each pair, a noise bottleneck ``Z = lam * H + (1 - lam) * eps`` (``lam = sigmoid(alpha)``) is
placed on the output ``H`` of block ``layer`` of one tower; ``alpha`` is fitted with Adam so that
the bottlenecked embedding stays close (cosine) to the other modality's embedding while passing
little information (KL to N(0, 1)). The per-token information that survives, in nats, is the map.

Differences from the released code, none of which changes the algorithm: ``H`` and the other
tower's embedding are computed once; only the blocks above ``layer`` run during optimisation; the
model is frozen; many pairs are fitted at once with one ``alpha`` per pair (a pair's result does not
depend on the rest of the batch); noise is drawn from a seeded generator per pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from ..models.base import TextBatch, Tower
from .base import Explainer, PairBatch, Side, check_layer, register_method
from .targets import Term

ContrastMode = Literal["maps", "fit"]
CONTRAST_MODES: tuple[ContrastMode, ...] = ("maps", "fit")


def kl_capacity(h: Tensor, lam: Tensor) -> Tensor:
    """Element-wise KL[N(lam*h, (1-lam)^2) || N(0, 1)] in nats."""
    mu = lam * h
    var = (1 - lam) ** 2
    return -0.5 * (1 + torch.log(var) - mu**2 - var)


def _token_mask(tower: Tower, h: Tensor, x: Any) -> Tensor:
    """(B, T) 1 for tokens that count in the compression term (text padding excluded)."""
    ht = tower.tokens(h)
    if isinstance(x, TextBatch):
        return x.attention_mask.to(ht.dtype)
    return torch.ones(ht.shape[:2], dtype=ht.dtype, device=ht.device)


def fit_bottleneck(
    tower: Tower,
    x: Any,
    target: Tensor | Sequence[Term],
    *,
    layer: int,
    beta: float,
    steps: int,
    lr: float,
    num_samples: int,
    seeds: list[int],
    init: float = 5.0,
    bf16: bool = False,
    antithetic: bool = False,
    common_noise: bool = False,
    hidden: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Fit one bottleneck per input row; return per-token capacity (B, T) and the hidden state.

    Args:
        tower: the tower to bottleneck; ``x`` its input batch (B rows).
        target: (B, d) unit-norm embedding of the other modality (fit = cosine with it), or a
            contrast's terms ``[(c_k, o_k (B, d))]``: fit = ``sum_k c_k cos(e, o_k)`` (what a
            constant offset would add changes no gradient).
        layer: the bottleneck sits on the output of this block (-1: on the input of block 0).
        beta: weight of the compression term.
        steps, lr: Adam steps and learning rate on ``alpha``.
        num_samples: noise draws per step (the reference's batch of 10 copies).
        seeds: one seed per row.
        bf16: run the blocks above the bottleneck under bfloat16 autocast (CUDA only; the
            bottleneck parameters and the loss stay in float32).
        antithetic: draw ``num_samples // 2`` noise tensors and use each with both signs
            (``num_samples`` must be even).
        common_noise: draw the noise once and use the same draws at every step.
        hidden: the hidden state after block ``layer`` for ``x``, when the caller has it (no grad);
            else it is computed here.

    The map is the capacity at the last step's ``alpha``, before that step's update (as in the
    released code), so the last step's forward and backward pass would change nothing and is not
    run: ``steps`` steps cost ``steps - 1`` passes through the blocks above ``layer``.
    """
    if hidden is not None:
        H = hidden.detach()
    else:
        with torch.no_grad():
            H = tower.encode(x, stop=layer)  # (B, T, D) or (B, C, h, w)
    B = H.shape[0]
    S = num_samples
    alpha = torch.full_like(H, init, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=lr)
    gens = [torch.Generator(device=H.device).manual_seed(s) for s in seeds]
    tmask = _token_mask(tower, H, x)  # (B, T)
    # each row's mean over its own (token, channel) elements, as in the single-pair reference
    per_row_count = tmask.sum(1) * tower.tokens(H).shape[-1]
    xs = _repeat_input(x, S)
    terms = [(1.0, target)] if isinstance(target, Tensor) else list(target)
    tgts = [(c, o.repeat(S, 1)) for c, o in terms]  # (S*B, d) each — sample-major
    draw = _noise_sampler(H, x, S, gens, antithetic=antithetic, common=common_noise)
    cap = None
    for step in range(steps):
        lam = torch.sigmoid(alpha)
        if step == steps - 1:  # the map is read here; this step's update would be discarded
            cap = kl_capacity(H, lam)
            break
        eps = draw()  # (S, B, ...)
        z = lam * H + (1 - lam) * eps  # (S, B, ...)
        z = z.reshape(S * B, *H.shape[1:])
        with torch.autocast(H.device.type, dtype=torch.bfloat16, enabled=bf16 and H.device.type == "cuda"):
            e = tower.encode(xs, start=layer, hidden=z).float()
        fit = _fit(e, tgts).view(S, B).mean(0)  # (B,)
        cap = kl_capacity(H, lam)  # after the forward pass: the reference's gradient summation order
        capt = tower.tokens(cap) * tmask[..., None]
        comp = capt.flatten(1).sum(1) / per_row_count  # (B,)
        loss = (beta * comp - fit).sum()  # rows are independent: sum keeps per-row gradients
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert cap is not None
    scores = tower.tokens(cap.detach()).sum(-1) * tmask  # (B, T) nats per token
    return scores, H


def _fit(e: Tensor, terms: list[Term]) -> Tensor:
    """(N,) ``sum_k c_k cos(e, o_k)``; a single term of weight 1 is the plain cosine."""
    out: Tensor | None = None
    for c, o in terms:
        f = F.cosine_similarity(e, o, dim=-1, eps=1e-6)
        f = f if c == 1.0 else c * f
        out = f if out is None else out + f
    assert out is not None
    return out


def _noise_sampler(
    H: Tensor, x: Any, S: int, gens: list[torch.Generator], *, antithetic: bool, common: bool
) -> Callable[[], Tensor]:
    """A function returning each step's (S, B, ...) noise: fresh i.i.d. draws (the reference),
    antithetic pairs (eps, -eps), and/or the same draws at every step."""
    if antithetic and S % 2:
        raise MethodError(f"antithetic noise needs an even number of samples, got {S}")

    def fresh() -> Tensor:
        if not antithetic:
            return _draw_noise(H, x, S, gens)
        half = _draw_noise(H, x, S // 2, gens)
        return torch.cat([half, -half], 0)

    if not common:
        return fresh
    fixed = fresh()
    return lambda: fixed


def _draw_noise(H: Tensor, x: Any, S: int, gens: list[torch.Generator]) -> Tensor:
    """(S, B, ...) standard normal noise; row i's draws depend only on its own generator.

    Text rows draw noise for their own tokens only (padding gets zeros), so a text's noise does not
    depend on how much the batch is padded.
    """
    if not isinstance(x, TextBatch):
        return torch.stack(
            [torch.randn((S, *H.shape[1:]), generator=g, device=H.device, dtype=H.dtype) for g in gens], 1
        )
    eps = torch.zeros((S, *H.shape), device=H.device, dtype=H.dtype)
    lengths = x.attention_mask.sum(1).tolist()
    for i, (g, n) in enumerate(zip(gens, lengths)):
        eps[:, i, :n] = torch.randn((S, n, H.shape[-1]), generator=g, device=H.device, dtype=H.dtype)
    return eps


def _repeat_input(x: Any, S: int) -> Any:
    if isinstance(x, TextBatch):
        return x.select(list(range(len(x))) * S)
    return x.repeat(S, *([1] * (x.dim() - 1)))


@register_method
class M2IB(Explainer):
    """Multi-modal information bottleneck attribution (label-free).

    Args:
        model: the dual encoder.
        layer: block whose output is bottlenecked, for the image and text tower (None: 9 of 12,
            the same relative depth in other towers; block 4 of the offline model's CNN); -1: the
            input of block 0 (token or patch embeddings with positions), useful for shallow towers
            whose pooled token has gathered the whole text after the first block (see the shapes
            benchmark in benchmarks/RESULTS.md).
        image_layer / text_layer: per-tower overrides of ``layer``.
        beta: compression weight (0.1; 1.0 was used for the chest X-ray model).
        steps: Adam steps (10). lr: Adam learning rate on ``alpha`` (1.0).
        num_samples: noise draws per step (10).
        bf16: bfloat16 autocast for the blocks above the bottleneck on CUDA (ignored on the CPU).
        contrast_mode: how the ``contrast`` target is explained: ``"maps"`` (one bottleneck per
            cosine of the difference, capacities combined with its signs: a signed map) or
            ``"fit"`` (one bottleneck whose fit term is the difference; nats, never negative).

    Paper: Wang, Rudner, Wilson. Visual Explanations of Image-Text Representations via
    Multi-Modal Information Bottleneck Attribution. NeurIPS 2023.
    """

    name = "m2ib"
    summary = "multi-modal information bottleneck (label-free, nats per token)"
    paper = "Wang, Rudner & Wilson. Visual Explanations of Image-Text Representations via Multi-Modal Information Bottleneck Attribution. NeurIPS 2023"
    needs_gradients = True
    contrast_form = (
        "one bottleneck per cosine of the difference, the capacity maps combined with its signs: "
        "map(t) - map(v) for a text contrast; map of A on A and -map of B on B for two images "
        "(contrast_mode='fit': one bottleneck whose fit is the difference)"
    )
    #: the noise estimator (fixed for m2ib: fresh i.i.d. draws at every step, as in the paper)
    antithetic: bool = False
    common_noise: bool = False
    #: the ``num_samples`` option as given (None in m2ib_fast: per-side counts instead)
    num_samples: int | None
    web_limits = {"steps": 100, "num_samples": 64, "image_samples": 64, "text_samples": 64}

    @classmethod
    def cost(cls, options: dict) -> float:
        """Per side: ``steps`` forward and backward passes of the blocks above the bottleneck, each
        over the noise draws."""
        n = cls.option(options, "num_samples")
        draws = 2 * n if n is not None else cls.option(options, "image_samples") + cls.option(options, "text_samples")
        return 2.0 * cls.option(options, "steps") * draws

    def __init__(
        self,
        model,
        layer: int | None = None,
        image_layer: int | None = None,
        text_layer: int | None = None,
        beta: float = 0.1,
        steps: int = 10,
        lr: float = 1.0,
        num_samples: int = 10,
        bf16: bool = False,
        contrast_mode: ContrastMode = "maps",
    ):
        super().__init__(model)
        self.layer = layer
        self.image_layer = check_layer(model.image, image_layer if image_layer is not None else layer, lowest=-1)
        self.text_layer = check_layer(model.text, text_layer if text_layer is not None else layer, lowest=-1)
        if beta < 0 or steps < 1 or num_samples < 1 or lr <= 0:
            raise MethodError(f"{self.name} needs beta >= 0, steps >= 1, num_samples >= 1 and lr > 0")
        self.beta, self.steps, self.lr, self.num_samples = beta, steps, lr, num_samples
        self.bf16 = bf16
        if contrast_mode not in CONTRAST_MODES:
            raise MethodError(
                f"{self.name}: contrast_mode must be one of {', '.join(CONTRAST_MODES)}, got {contrast_mode!r}"
            )
        self.contrast_mode = contrast_mode
        # noise draws per step on each side (m2ib: the same on both)
        self.image_samples = self.text_samples = num_samples

    def hidden_layer(self, side: Side) -> int | None:
        return self.image_layer if side == "image" else self.text_layer

    def _fit(
        self,
        tower: Tower,
        x: Any,
        target: Tensor | Sequence[Term],
        layer: int,
        seeds: list[int],
        num_samples: int,
        hidden: Tensor | None = None,
    ):
        with torch.enable_grad():
            return fit_bottleneck(
                tower,
                x,
                target,
                layer=layer,
                beta=self.beta,
                steps=self.steps,
                lr=self.lr,
                num_samples=num_samples,
                seeds=seeds,
                bf16=self.bf16,
                antithetic=self.antithetic,
                common_noise=self.common_noise,
                hidden=hidden,
            )

    def _capacity(self, batch: PairBatch, side: Side) -> tuple[Tensor, Tensor]:
        """Per-token capacity (B, T) for ``side`` and the bottlenecked hidden state.

        Without a contrast: one bottleneck whose fit is the cosine with the other side. For a
        contrast ``sum_k c_k cos(e, o_k) + offset``: with ``contrast_mode="maps"`` one bottleneck
        per term (fitted together, the same noise), capacities summed with the weights ``c_k``;
        with ``"fit"`` one bottleneck whose fit is the whole sum.
        """
        tower = self.model.tower(side)
        x: Any = batch.pixels if side == "image" else batch.texts
        L = self.image_layer if side == "image" else self.text_layer
        S = self.image_samples if side == "image" else self.text_samples
        hidden = batch.hidden_at(side, L)
        if batch.contrast is None:
            other = batch.text_emb if side == "image" else batch.image_emb
            return self._fit(tower, x, other, L, batch.seeds, S, hidden)
        terms = batch.terms(side)[0]
        if self.contrast_mode == "fit" or (len(terms) == 1 and terms[0][0] == 1.0):
            return self._fit(tower, x, terms, L, batch.seeds, S, hidden)
        K, B = len(terms), len(batch)
        rows = list(range(B)) * K  # term-major copies of the batch
        xs = x.select(rows) if isinstance(x, TextBatch) else x.repeat(K, *([1] * (x.dim() - 1)))
        hs = None if hidden is None else hidden.repeat(K, *([1] * (hidden.dim() - 1)))
        other = torch.cat([o for _, o in terms])  # (K*B, d)
        caps, H = self._fit(tower, xs, other, L, batch.seeds * K, S, hs)
        weights = torch.tensor([c for c, _ in terms], dtype=caps.dtype, device=caps.device)
        return (weights[:, None, None] * caps.view(K, B, *caps.shape[1:])).sum(0), H[:B]

    def attribute_image(self, batch: PairBatch) -> Tensor:
        scores, H = self._capacity(batch, "image")
        return self.model.image.token_scores_to_grid(scores, H)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        scores, _ = self._capacity(batch, "text")
        return scores
