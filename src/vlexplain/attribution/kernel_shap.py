"""Kernel SHAP (Lundberg & Lee, NeurIPS 2017) over image regions and text tokens.

Features are image regions (the tower's patch grid, a fixed grid for CNN towers, or SLIC
superpixels) or the content tokens of a text. A coalition keeps some features and replaces the
others by a baseline (images: the mean colour or a blurred copy; texts: the pad token). Shapley
values are the solution of the Shapley-kernel weighted least squares problem with the efficiency
constraint ``sum(phi) = f(x) - f(baseline)`` built in (solved through its KKT system, so every
feature is treated alike):

* when all ``2^M - 2`` non-trivial coalitions fit in ``n_samples`` they are enumerated with their
  exact kernel weights, and the result is the exact Shapley value;
* otherwise coalition sizes are drawn with probability proportional to ``(M-1) / (s (M-s))``,
  members uniformly, each coalition paired with its complement; all weights are then equal.

Captum's ``KernelShap`` explains one example at a time from the global random generator; here
every pair draws its coalitions from its own generator, and the perturbed inputs of all pairs share
batched forward passes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import MethodError
from .base import Explainer, PairBatch, image_grid_size, register_method
from .perturbation import (
    BASELINES,
    check_choice,
    content_positions,
    grid_feature_mask,
    image_baseline,
    keep_from_features,
    scatter_content,
    score_images,
    score_texts,
    slic_feature_masks,
)

#: enumerate every coalition up to this many features when the budget allows
MAX_ENUMERATED_FEATURES = 20


def sample_coalitions(M: int, n_samples: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Coalitions of ``M`` features and their weights in the least squares problem.

    Args:
        M: number of features.
        n_samples: budget of coalitions (the empty and full coalitions are not counted).
        generator: the pair's random generator (its device is used).

    Returns:
        Z: (n, M) float 0/1, 1 = feature kept. w: (n,) weights (float64).
    """
    dev = generator.device
    if M < 2:
        return torch.zeros(0, M, device=dev), torch.zeros(0, dtype=torch.float64, device=dev)
    if M <= MAX_ENUMERATED_FEATURES and 2**M - 2 <= n_samples:
        codes = torch.arange(1, 2**M - 1, device=dev)
        Z = ((codes[:, None] >> torch.arange(M, device=dev)) & 1).float()  # (2^M - 2, M)
        s = Z.sum(1).double()
        log_comb = math.lgamma(M + 1) - torch.lgamma(s + 1) - torch.lgamma(M - s + 1)
        w = (M - 1) / (torch.exp(log_comb) * s * (M - s))
        return Z, w
    half = (n_samples + 1) // 2
    sizes = torch.arange(1, M, device=dev, dtype=torch.float64)
    p = 1.0 / (sizes * (M - sizes))
    s = torch.multinomial(p, half, replacement=True, generator=generator) + 1  # (half,)
    u = torch.rand(half, M, generator=generator, device=dev)
    ranks = u.argsort(1).argsort(1)  # a uniform random permutation per row
    Z = (ranks < s[:, None]).float()
    Z = torch.cat([Z, 1 - Z])[:n_samples]  # each coalition with its complement
    return Z, torch.ones(Z.shape[0], dtype=torch.float64, device=dev)


def solve_shapley(Z: Tensor, w: Tensor, y: Tensor, f_full: Tensor, f_empty: Tensor) -> Tensor:
    """Shapley-kernel weighted least squares with the efficiency constraint.

    Minimises ``sum_k w_k (y_k - f_empty - Z_k . phi)^2`` subject to
    ``sum(phi) = f_full - f_empty``.

    Args:
        Z: (n, M) coalitions. w: (n,) weights. y: (n,) scores of the coalitions.
        f_full / f_empty: scalar scores with every / no feature kept.

    Returns:
        (M,) float64 attributions.
    """
    M = Z.shape[1]
    delta = (f_full - f_empty).double()
    if M == 0:
        return torch.zeros(0, dtype=torch.float64, device=Z.device)
    if M == 1 or Z.shape[0] == 0:
        return torch.full((M,), float(delta) / M, dtype=torch.float64, device=Z.device)
    Zd, wd = Z.double(), w.double()
    r = y.double() - f_empty.double()
    A = Zd.T @ (Zd * wd[:, None])  # (M, M)
    b = Zd.T @ (wd * r)
    ones = torch.ones(M, 1, dtype=torch.float64, device=Z.device)
    kkt = torch.cat([torch.cat([A, ones], 1), torch.cat([ones.T, ones.new_zeros(1, 1)], 1)], 0)
    rhs = torch.cat([b, delta.reshape(1)])
    scale = A.abs().max().clamp_min(1e-30)  # keep the multiplier row on the same scale
    kkt[:M, M] *= scale
    kkt[M, :M] *= scale
    rhs[M] *= scale
    sol = torch.linalg.pinv(kkt, hermitian=True) @ rhs
    return sol[:M]


@register_method
class KernelShap(Explainer):
    """Kernel SHAP over image regions and text tokens (model-agnostic, no gradients).

    Args:
        model: the dual encoder.
        n_samples: coalitions per pair and side (256); all of them when ``2^M - 2`` fit.
        segments: image features: ``grid`` (the tower's patch grid; 7x7 for CNN towers) or
            ``slic`` (SLIC superpixels of the image).
        grid: cells per side of the ``grid`` features (None: the patch grid / 7 for CNNs).
        n_segments / compactness: SLIC parameters (50, 10).
        baseline: what removed image regions become: ``mean`` (zeros in normalised space) or
            ``blur``. Removed text tokens become the pad token.
        chunk: perturbed inputs per forward pass (64).

    Paper: Lundberg & Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017.
    """

    name = "kernel_shap"
    contrast_form = "Shapley values of the difference of perturbed scores (linear: SHAP of s1 minus SHAP of s2)"
    summary = "Kernel SHAP: Shapley values of image regions and tokens (no gradients)"
    paper = "Lundberg & Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017"
    needs_gradients = False
    web_limits = {"n_samples": 2048, "chunk": 256, "grid": 32, "n_segments": 400}

    @classmethod
    def cost(cls, options: dict) -> float:
        return 2.0 * cls.option(options, "n_samples")  # n_samples coalitions per side

    def __init__(
        self,
        model,
        n_samples: int = 256,
        segments: str = "grid",
        grid: int | None = None,
        n_segments: int = 50,
        compactness: float = 10.0,
        baseline: str = "mean",
        chunk: int = 64,
    ):
        super().__init__(model)
        check_choice(self.name, "segments", segments, ("grid", "slic"))
        check_choice(self.name, "baseline", baseline, BASELINES)
        if n_samples < 1 or chunk < 1 or n_segments < 2 or (grid is not None and grid < 1):
            raise MethodError("kernel_shap needs n_samples >= 1, chunk >= 1, n_segments >= 2 and grid >= 1")
        self.n_samples, self.segments, self.grid = n_samples, segments, grid
        self.n_segments, self.compactness, self.baseline, self.chunk = n_segments, compactness, baseline, chunk

    def _grid(self) -> tuple[int, int]:
        if self.grid is not None:
            return self.grid, self.grid
        if self.model.image.kind == "cnn":
            return 7, 7
        return image_grid_size(self.model)

    def _feature_masks(self, batch: PairBatch) -> tuple[Tensor, list[int]]:
        """(B, H, W) feature index per pixel and the number of features per pair."""
        B, H, W = len(batch), *batch.pixels.shape[-2:]
        if self.segments == "slic":
            masks = slic_feature_masks(self.model, batch.pixels, self.n_segments, self.compactness)
            return torch.stack(masks), [int(m.max()) + 1 for m in masks]
        g = self._grid()
        fm = grid_feature_mask((H, W), g, batch.pixels.device)
        return fm.expand(B, H, W), [g[0] * g[1]] * B

    def _coalitions(self, batch: PairBatch, Ms: list[int]) -> tuple[Tensor, Tensor, list[Tensor], list[int]]:
        """Rows per pair: full, empty, then the sampled coalitions, padded to max(Ms) features."""
        dev = batch.pixels.device
        M_max = max(Ms)
        rows, weights, counts = [], [], []
        for M, g in zip(Ms, batch.generators(dev)):  # one generator per pair
            Z, w = sample_coalitions(M, self.n_samples, g)
            Z = torch.cat([torch.ones(1, M, device=dev), torch.zeros(1, M, device=dev), Z.to(dev)])
            rows.append(torch.nn.functional.pad(Z, (0, M_max - M)))
            weights.append(w.to(dev))
            counts.append(Z.shape[0])
        pair = torch.repeat_interleave(torch.arange(len(Ms), device=dev), torch.tensor(counts, device=dev))
        return torch.cat(rows), pair, weights, counts

    def _solve(self, y: Tensor, Z: Tensor, weights: list[Tensor], counts: list[int], Ms: list[int]) -> list[Tensor]:
        out = []
        for yi, Zi, wi, M in zip(y.split(counts), Z.split(counts), weights, Ms):
            out.append(solve_shapley(Zi[2:, :M], wi, yi[2:], yi[0], yi[1]))
        return out

    def attribute_image(self, batch: PairBatch) -> Tensor:
        feats, Ms = self._feature_masks(batch)
        base = image_baseline(batch.pixels, self.baseline)  # type: ignore[arg-type]
        Z, pair, weights, counts = self._coalitions(batch, Ms)
        H, W = feats.shape[-2:]
        scores = []
        for a in range(0, pair.numel(), self.chunk):
            p = pair[a : a + self.chunk]
            m = torch.gather(Z[a : a + self.chunk], 1, feats[p].reshape(p.numel(), -1)).view(-1, H, W)
            scores.append(score_images(self.model, batch, base, p, m))
        phis = self._solve(torch.cat(scores), Z, weights, counts, Ms)
        maps = [phi[f] for phi, f in zip(phis, feats)]  # (H, W) per pair: value of its feature
        return torch.stack(maps).to(batch.pixels.dtype)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        pos, n = content_positions(batch.texts)
        Ms = [int(v) for v in n.tolist()]
        if max(Ms) == 0:
            return torch.zeros(batch.texts.ids.shape, dtype=batch.image_emb.dtype, device=batch.image_emb.device)
        Z, pair, weights, counts = self._coalitions(batch, Ms)
        T = batch.texts.ids.shape[1]
        scores = []
        for a in range(0, pair.numel(), self.chunk):
            p = pair[a : a + self.chunk]
            keep = keep_from_features(pos, p, Z[a : a + self.chunk], T)
            scores.append(score_texts(self.model, batch, p, keep))
        phis = self._solve(torch.cat(scores), Z, weights, counts, Ms)
        return scatter_content(batch.texts, phis).to(batch.image_emb.dtype)
