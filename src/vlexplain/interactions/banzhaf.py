"""``banzhaf``: FIxLIP's weighted Banzhaf cross-modal interactions.

Players are the image's cells (the patch grid or a coarser one) and the text's shown tokens. A
coalition keeps some cells (the others are replaced by a baseline) and some tokens (the others
become the pad token); its value is the cosine of the two embeddings. The weighted Banzhaf
interaction of cell ``i`` and token ``j`` is the expected second difference

    I(i, j) = E_S [ v(S + i + j) - v(S + i) - v(S + j) + v(S) ],   every other player in S with probability p.

Because the value is a dot product of two unit embeddings, ``v = f(S_image) . g(S_text)``, and the
two coalitions are drawn independently, the expectation factorises:
``I(i, j) = sum_d B_i(f_d) B_j(g_d)``, where ``B`` is the first-order weighted Banzhaf value of one
embedding dimension's game. Each ``B`` is the slope of a weighted least-squares fit of that game
on the coalitions (FIxLIP's regression estimator at order one), so ``K`` masked images and ``L``
masked texts give the interactions of all ``K x L`` combinations. With enough budget to list every
coalition of both modalities the result is exact.

Coalitions are drawn by ``shapiq``'s ``CoalitionSampler`` (sizes weighted binom(n, k) p^k
(1-p)^(n-k), empty and full coalitions always kept, sizes that fit listed whole); the regression
is ours, as shapiq's regression estimators fit one scalar game over all players and at p = 0.5
only. Perturbed inputs of every pair in a batch share forward passes.

Paper: Baniecki, Muschalik, Fumagalli, Hammer, Hüllermeier, Biecek. Explaining Similarity in
Vision-Language Encoders with Weighted Banzhaf Interactions. NeurIPS 2025.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..attribution.base import image_grid_size
from ..attribution.perturbation import _perturbed_texts, grid_feature_mask
from ..errors import MethodError, require
from ..models.base import DualEncoder
from .base import InteractionBatch, InteractionMethod, register_interaction
from .integrated_jacobians import image_reference

ImageBaseline = Literal["zeros", "blur", "mean"]


def coalitions(n: int, budget: int, p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, n) bool coalitions and (K,) regression weights whose weighted sums estimate expectations
    under ``Bernoulli(p)`` membership (exact weights when ``budget >= 2 ** n``)."""
    sizes = np.arange(n + 1)
    prob = p**sizes * (1 - p) ** (n - sizes)  # of one coalition of each size
    if budget >= 2**n:  # every coalition
        Z = ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
        return Z, prob[Z.sum(1)]
    sampling = require("shapiq.approximator.sampling", "interactions")
    from scipy.special import binom

    sampler = sampling.CoalitionSampler(n, binom(n, sizes) * prob, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sampling might be inefficient" near the full budget
        sampler.sample(budget)
    Z = sampler.coalitions_matrix.astype(bool)
    return Z, prob[Z.sum(1)] * sampler.sampling_adjustment_weights


def banzhaf_slopes(Z: np.ndarray, w: np.ndarray, values: Tensor) -> Tensor:
    """(n, d) slopes of the weighted least-squares fit ``values ~ b + Z @ beta`` (one column per dimension)."""
    X = torch.cat([torch.ones(len(Z), 1, dtype=torch.float64), torch.from_numpy(Z).double()], 1)
    sw = torch.from_numpy(np.sqrt(w)).double()[:, None]
    beta = torch.linalg.lstsq(X * sw, values.double().cpu() * sw).solution  # (1 + n, d)
    return beta[1:].to(values.dtype)


def split_budget(budget: int, n_image: int, n_text: int) -> tuple[int, int]:
    """Masked images and masked texts for one pair: in proportion to the players, each capped at
    every coalition, the rest to the other side."""
    full_i, full_t = min(2 ** min(n_image, 62), budget), min(2 ** min(n_text, 62), budget)
    share = round(budget * n_text / (n_image + n_text))
    b_t = min(full_t, budget - (n_image + 1), max(n_text + 1, share))
    b_i = min(full_i, budget - b_t)
    b_t = min(full_t, budget - b_i)
    return b_i, b_t


@register_interaction
class Banzhaf(InteractionMethod):
    """FIxLIP weighted Banzhaf interactions between image cells and tokens (cosine game).

    Args:
        model: the dual encoder.
        budget: masked forward passes per pair, images and texts together (1024).
        p: the probability with which a player stays in a coalition (0.5: the Banzhaf index).
        cells: (rows, cols) of the image players (None: the image tower's token grid).
        image_baseline: what removed cells become: ``zeros`` (the dataset mean colour), ``blur``, ``mean``.
        chunk: masked inputs per forward pass.

    Paper: Baniecki et al. Explaining Similarity in Vision-Language Encoders with Weighted
    Banzhaf Interactions. NeurIPS 2025.

    Example:
        >>> vx.interactions(model, "bus.jpg", "a red bus", method="banzhaf", budget=2048, cells=(7, 7))
    """

    name = "banzhaf"
    summary = "FIxLIP weighted Banzhaf interactions of image cells and tokens (masking, shapiq sampling)"
    paper = "Baniecki et al. Explaining Similarity in Vision-Language Encoders with Weighted Banzhaf Interactions. NeurIPS 2025"

    def __init__(
        self,
        model: DualEncoder,
        budget: int = 1024,
        p: float = 0.5,
        cells: tuple[int, int] | list[int] | None = None,
        image_baseline: ImageBaseline = "zeros",
        chunk: int = 64,
    ):
        super().__init__(model)
        grid = image_grid_size(model) if cells is None else tuple(cells)
        if len(grid) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in grid):
            raise MethodError(f"cells must be two integers >= 1 (rows, cols), got {cells!r}")
        H, W = model.input_size
        if grid[0] > H or grid[1] > W:
            raise MethodError(f"cells {grid} are finer than the {H}x{W} input")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 4:
            raise MethodError(f"budget must be an integer >= 4, got {budget!r}")
        if not isinstance(p, (int, float)) or not 0 < p < 1:
            raise MethodError(f"p must be strictly between 0 and 1, got {p!r}")
        if image_baseline not in ("zeros", "blur", "mean"):
            raise MethodError(f"image_baseline must be one of zeros, blur, mean, got {image_baseline!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise MethodError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.budget, self.p, self.image_baseline, self.chunk = budget, float(p), image_baseline, chunk
        self.cells: tuple[int, int] = (int(grid[0]), int(grid[1]))

    def check_text(self, n_tokens: int) -> None:
        n_i = self.cells[0] * self.cells[1]
        need = n_i + 1 + n_tokens + 1
        if self.budget < need:
            raise MethodError(
                f"banzhaf: budget {self.budget} is too small for {n_i} image cells and {n_tokens} tokens; "
                f"give budget >= {need} (or fewer cells)"
            )

    def _embed(self, encode, rows: list[tuple[int, Tensor]]) -> list[Tensor]:
        """Unit embeddings of every pair's masked inputs, ``chunk`` per forward pass."""
        flat = [(j, z) for j, Z in rows for z in Z]
        outs = []
        for s in range(0, len(flat), self.chunk):
            part = flat[s : s + self.chunk]
            outs.append(F.normalize(encode([j for j, _ in part], torch.stack([z for _, z in part])), dim=-1))
        e = torch.cat(outs)
        sizes = np.cumsum([0] + [len(Z) for _, Z in rows])
        return [e[a:b] for a, b in zip(sizes[:-1], sizes[1:])]

    @torch.no_grad()
    def interact(self, batch: InteractionBatch) -> Tensor:
        model, dev = self.model, batch.pixels.device
        n_i = self.cells[0] * self.cells[1]
        cm = batch.texts.content_mask
        plans = []
        for j in range(len(batch)):
            n_t = int(cm[j].sum())
            self.check_text(n_t)
            b_i, b_t = split_budget(self.budget, n_i, n_t)
            Zi, wi = coalitions(n_i, b_i, self.p, batch.seeds[j])
            Zt, wt = coalitions(n_t, b_t, self.p, batch.seeds[j] + 1)
            plans.append((Zi, wi, Zt, wt))
        cell = grid_feature_mask(
            (int(model.input_size[0]), int(model.input_size[1])), self.cells, dev
        )  # (H, W) cell index
        base = image_reference(batch.pixels, self.image_baseline)

        def encode_images(pair: list[int], Z: Tensor) -> Tensor:
            keep = Z[:, cell].to(batch.pixels.dtype)[:, None]  # (k, 1, H, W)
            return model.image.encode(batch.pixels[pair] * keep + base[pair] * (1 - keep))

        def encode_texts(pair: list[int], keep: Tensor) -> Tensor:  # keep: (k, T) kept positions
            return model.text.encode(_perturbed_texts(batch.texts, torch.tensor(pair), keep, model.pad_token_id))

        def positions(j: int, Z: np.ndarray) -> Tensor:  # (K, n_t) coalitions -> (K, T) kept positions
            keep = torch.zeros(len(Z), cm.shape[1], dtype=torch.bool, device=dev)
            keep[:, cm[j]] = torch.from_numpy(Z).to(dev)
            return keep

        img = self._embed(encode_images, [(j, torch.from_numpy(P[0]).to(dev)) for j, P in enumerate(plans)])
        txt = self._embed(encode_texts, [(j, positions(j, P[2])) for j, P in enumerate(plans)])
        out = torch.zeros(len(batch), cm.shape[1], *self.cells, dtype=batch.pixels.dtype, device=dev)
        for j, (Zi, wi, Zt, wt) in enumerate(plans):
            bi = banzhaf_slopes(Zi, wi, img[j])  # (n_i, d)
            bt = banzhaf_slopes(Zt, wt, txt[j])  # (n_t, d)
            out[j, cm[j]] = (bt @ bi.T).view(-1, *self.cells).to(out.device, out.dtype)
            self.last_extras.append({"image_coalitions": len(Zi), "text_coalitions": len(Zt)})
        return out


def exact_budget(n_image: int, n_text: int) -> int:
    """The budget that lists every coalition of both sides (the result is then exact)."""
    return 2**n_image + 2**n_text
