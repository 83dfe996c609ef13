"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci, ICML 2022).

Pixels are removed most-relevant-first (MoRF) or least-relevant-first (LeRF) at several fractions
and re-filled by *noisy linear imputation*: every removed pixel equals the weighted mean of its
8 neighbours inside the image (weight 1/6 for the 4 direct neighbours, 1/12 for the 4 diagonal
ones, renormalised at the border), which couples removed pixels into one sparse linear system
per image and channel; then Gaussian noise of standard deviation ``noise`` is added to the
imputed pixels. The system ``(S - W_mm) x_m = W_mk x_k`` (S: the sum of in-image neighbour
weights) is symmetric positive definite whenever at least one pixel is kept, and is solved here
for all images and channels at once by Jacobi-preconditioned conjugate gradients whose matrix
product is a 3 x 3 convolution — on the model's device, with no per-pixel Python loop.

Imputation and noise act on the preprocessed tensor (the model's normalised input space), as in
pytorch-grad-cam's ``NoisyLinearImputer``; linear imputation commutes with the per-channel
normalisation, so only the noise scale depends on this choice.

A lower MoRF curve and a higher LeRF curve are better; ``road_combined`` = (mean LeRF - mean MoRF) / 2
is pytorch-grad-cam's ``ROADCombined`` (higher is better).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..models.base import DualEncoder, TextBatch
from ._common import check_pairs, embed_texts, image_scores, prepare_image_maps, rank_desc, trapezoid_auc

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def neighbour_kernel(device=None, dtype=torch.float32) -> Tensor:
    """(1, 1, 3, 3) weights of the 8 neighbours: 1/6 direct, 1/12 diagonal, 0 centre."""
    d, s = 1 / 12, 1 / 6
    return torch.tensor([[d, s, d], [s, 0.0, s], [d, s, d]], device=device, dtype=dtype).view(1, 1, 3, 3)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=(2, 3), keepdim=True)


def _solve(x_img: Tensor, m: Tensor, tol: float, max_iter: int) -> Tensor:
    """Imputed values (zero at kept pixels) for (N, 1, H, W) images and masks (1 = removed).

    Jacobi-preconditioned conjugate gradients, all systems at once, started from the mean of the
    kept pixels. Every 8 iterations the converged systems are written out and dropped from the
    batch, so easy systems do not pay for the hardest one.
    """
    h, w = x_img.shape[-2:]
    k = neighbour_kernel(x_img.device)
    conv = lambda t: F.conv2d(t, k, padding=1)
    s = conv(torch.ones(1, 1, h, w, device=x_img.device))
    keep = 1 - m
    rhs = m * conv(x_img * keep)
    x = m * ((x_img * keep).sum(dim=(2, 3), keepdim=True) / keep.sum(dim=(2, 3), keepdim=True).clamp_min(1))
    r = rhs - m * (s * x - conv(m * x))
    z = r / s
    p = z
    rz = _dot(r, z)
    bnorm = _dot(rhs, rhs).sqrt().clamp_min(1e-12)
    out = torch.zeros_like(x_img)
    active = torch.arange(x_img.shape[0], device=x_img.device)
    for it in range(max_iter):
        if it % 8 == 0:
            done = (_dot(r, r).sqrt() <= tol * bnorm).flatten()
            if bool(done.any()):
                out[active[done]] = x[done]
                left = ~done
                if not bool(left.any()):
                    return out
                active, x, r, p, rz, bnorm, m = (t[left] for t in (active, x, r, p, rz, bnorm, m))
        ap = m * (s * p - conv(m * p))
        den = _dot(p, ap)
        alpha = torch.where(den > 0, rz / den.clamp_min(1e-30), torch.zeros_like(den))
        x = x + alpha * p
        r = r - alpha * ap
        z = r / s
        rz_new = _dot(r, z)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    out[active] = x
    return out


def linear_impute(
    images: Tensor,
    removed: Tensor,
    *,
    noise: float = 0.0,
    generators: Sequence[torch.Generator] | None = None,
    tol: float = 1e-5,
    max_iter: int = 5000,
) -> Tensor:
    """Noisy linear imputation of the ``removed`` pixels of (B, C, H, W) images.

    Args:
        images: (B, C, H, W) images.
        removed: (B, H, W) bool, True where a pixel is removed (all channels).
        noise: standard deviation of the Gaussian noise added to imputed pixels (0: none).
        generators: one torch.Generator per image for the noise (default: the global RNG).
        tol: stop when every system's residual norm is below ``tol`` times its right-hand side's.
        max_iter: iteration cap of the conjugate-gradient solver.

    Returns:
        (B, C, H, W) images with removed pixels imputed (kept pixels unchanged). If every pixel of
        an image is removed the system has no data; its pixels become 0 (plus noise).
    """
    if removed.shape != (images.shape[0], *images.shape[2:]):
        raise InputError(
            f"removed must be (B, H, W) = {(images.shape[0], *images.shape[2:])}, got {tuple(removed.shape)}"
        )
    b, c, h, w = images.shape
    x_img = images.float().reshape(b * c, 1, h, w)
    m = removed.to(images.device)[:, None].expand(b, c, h, w).reshape(b * c, 1, h, w).float()
    x = _solve(x_img, m, tol, max_iter)
    out = x_img * (1 - m) + m * x
    out = out.reshape(b, c, h, w)
    if noise > 0:
        if generators is None:
            eps = torch.randn(b, c, h, w, device=images.device)
        else:
            eps = torch.stack([torch.randn(c, h, w, generator=g, device=images.device) for g in generators])
        out = out + noise * eps * removed.to(images.device)[:, None].float()
    return out.to(images.dtype)


@torch.no_grad()
def road_scores(
    model: DualEncoder,
    pixels: Tensor,
    texts: TextBatch,
    image_maps: Tensor,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    noise: float = 0.01,
    seed: int = 0,
    normalize: bool = False,
    tol: float = 1e-5,
    max_iter: int = 5000,
    batch_size: int = 32,
) -> dict[str, Tensor]:
    """ROAD MoRF / LeRF curves with noisy linear imputation.

    Args:
        model: the dual encoder.
        pixels: (B, 3, H, W) preprocessed images.
        texts: B texts (the pair partners; the score is the cosine with their embeddings).
        image_maps: (B, H, W) raw maps.
        fractions: fractions of pixels removed (``round(f * H * W)`` pixels by map rank; ties keep
            index order).
        noise: noise standard deviation in the preprocessed input space (0.01 as in pytorch-grad-cam).
        seed: every pair draws its noise from its own generator seeded with ``seed``.
        normalize: divide scores by the original score.
        tol, max_iter: solver settings (see ``linear_impute``).
        batch_size: images per forward pass.

    Returns:
        ``morf_curve`` / ``lerf_curve`` (B, F) scores at ``fractions``; ``morf_auc`` / ``lerf_auc``
        (B,) trapezoid area over the fractions (x in fraction units); ``morf_mean`` / ``lerf_mean``
        (B,) mean over fractions; ``road_combined`` (B,) = (lerf_mean - morf_mean) / 2;
        ``score`` (B,) the original score.
    """
    n = check_pairs(pixels, texts)
    fr = [float(f) for f in fractions]
    if not fr or any(not 0 <= f <= 1 for f in fr):
        raise InputError("fractions must be a non-empty list of values in [0, 1]")
    pixels = pixels.to(model.device, model.dtype)
    h, w = pixels.shape[-2:]
    maps = prepare_image_maps(image_maps, (h, w), n, pixels.device)
    ranks = rank_desc(maps.reshape(n, -1)).reshape(n, h, w)
    t_emb = embed_texts(model, texts, batch_size)
    gens = [torch.Generator(device=pixels.device).manual_seed(int(seed)) for _ in range(n)]
    total = h * w
    variants = []  # (kind, removed (B, H, W)) in the order each pair's generator draws its noise
    for f in fr:
        cnt = int(round(f * total))
        variants += [("morf", ranks < cnt), ("lerf", ranks >= total - cnt)]
    group = max(1, (4 * batch_size) // n)  # variants solved together in one batched system
    scores: list[Tensor] = []
    for g0 in range(0, len(variants), group):
        part = variants[g0 : g0 + group]
        x = linear_impute(
            pixels.repeat(len(part), 1, 1, 1),
            torch.cat([r for _, r in part]),
            noise=noise,
            generators=gens * len(part),
            tol=tol,
            max_iter=max_iter,
        )
        scores += list(image_scores(model, x, t_emb.repeat(len(part), 1), batch_size).split(n))
    curves: dict[str, list[Tensor]] = {"morf": scores[0::2], "lerf": scores[1::2]}
    original = image_scores(model, pixels, t_emb, batch_size)
    out: dict[str, Tensor] = {"score": original}
    xs = torch.tensor(fr, device=original.device)
    for kind, vals in curves.items():
        cur = torch.stack(vals, 1)
        if normalize:
            cur = cur / original[:, None]
        out[f"{kind}_curve"] = cur
        out[f"{kind}_auc"] = trapezoid_auc(cur, xs) if len(fr) > 1 else torch.zeros_like(original)
        out[f"{kind}_mean"] = cur.mean(1)
    out["road_combined"] = (out["lerf_mean"] - out["morf_mean"]) / 2
    return out
