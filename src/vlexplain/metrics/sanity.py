"""Cascading model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

The image tower's blocks are re-initialised one at a time from the top (last block) down,
cumulatively, on a deep copy of the model; after each stage the pairs are explained again with
the same method, options and seed, and each randomised map is compared with the original map.
A method whose maps stay similar while the weights they should depend on are destroyed fails
the check: low similarity is the desired outcome.

Re-initialisation of a block (every sub-module it contains):

* normalisation layers (LayerNorm, GroupNorm, RMSNorm, BatchNorm/InstanceNorm): identity —
  weight 1, bias 0, and for batch norm running mean 0 and running variance 1;
* every other parameter: names ending in ``bias`` are set to 0, all others (Linear / Conv weights,
  fused attention input projections, layer-scale factors) are drawn from normal(0, 0.02) with a
  generator seeded by ``seed``.

Similarities per pair and stage: Spearman rank correlation of the raw maps (``spearman``) and of
their absolute values (``spearman_abs``), and SSIM of the maps min-max scaled to [0, 1] (``ssim``,
implemented here in torch: Gaussian window 11 x 11, sigma 1.5, K1 0.01, K2 0.03, data range 1,
mean over the valid region; identical to ``skimage.metrics.structural_similarity(a, b,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MethodError
from ..models.base import DualEncoder, TextBatch
from ._common import check_pairs, image_maps_from_explanations, minmax01, prepare_image_maps
from .deletion_insertion import gaussian_kernel1d
from .localization import average_ranks

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


@torch.no_grad()
def reinit_module(module: nn.Module, generator: torch.Generator | None = None, std: float = 0.02) -> None:
    """Re-initialise every sub-module of ``module`` in place (see the module docstring)."""
    for sub in module.modules():
        if isinstance(sub, _NORMS):
            norm: Any = sub  # weight, bias and running statistics are optional on norm layers
            if norm.weight is not None:
                norm.weight.fill_(1.0)
            if getattr(norm, "bias", None) is not None:
                norm.bias.zero_()
            if getattr(norm, "running_mean", None) is not None:
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0)
            continue
        for name, p in sub.named_parameters(recurse=False):
            if name.endswith("bias"):
                p.zero_()
            else:
                noise = torch.randn(p.shape, generator=generator, device=generator.device if generator else "cpu")
                p.copy_(noise.to(p.device, p.dtype) * std)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """(B, N) x (B, N) -> (B,) Spearman rank correlation (average ranks for ties; NaN for a constant row)."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    out = (ra * rb).sum(1) / den.clamp_min(1e-30)
    return torch.where(den > 0, out, torch.full_like(out, float("nan"))).float()


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """(B, H, W) x (B, H, W) -> (B,) structural similarity (Wang et al., 2004), Gaussian window.

    Means over the ``(H - window + 1) x (W - window + 1)`` positions where the window fits.
    """
    x, y = a.double()[:, None], b.double()[:, None]
    g = gaussian_kernel1d(window, sigma, x.device, x.dtype)
    k = (g[:, None] * g[None, :])[None, None]

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(t, k)

    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def _explain_maps(
    model: DualEncoder, pixels: Tensor, texts: TextBatch, method: str, seed: int, options: dict
) -> Tensor:
    from ..attribution.api import explain

    exps = explain(model, pixels, list(texts.texts), method=method, seed=seed, sides=["image"], **options)
    if not isinstance(exps, list):
        exps = [exps]
    return image_maps_from_explanations(exps)


def cascading_randomization(
    model: DualEncoder,
    pixels: Tensor,
    texts: TextBatch,
    image_maps: Tensor | None = None,
    token_maps: Tensor | None = None,
    *,
    method: str,
    seed: int = 0,
    init_seed: int = 0,
    options: dict[str, Any] | None = None,
    **method_options: Any,
) -> dict[str, Any]:
    """Cascading randomisation of the image tower's blocks, top down.

    Args:
        model: the dual encoder (left untouched: the randomisation works on a deep copy).
        pixels: (B, 3, H, W) preprocessed images.
        texts: B texts.
        image_maps: (B, H, W) original maps of ``method`` with the same options and seed; None
            computes them with [`vlexplain.explain`][vlexplain.explain].
        token_maps: unused (common metric signature).
        method: a registered method name.
        seed: the explanation seed (the same at every stage).
        init_seed: seed of the re-initialisation generator.
        options, **method_options: the method's options.

    Returns:
        ``stages`` (list of names, "block_{i}" meaning blocks i .. last are random),
        ``spearman``, ``spearman_abs``, ``ssim``: (B, n_stages) tensors.
    """
    n = check_pairs(pixels, texts)
    opts = {**(options or {}), **method_options}
    pixels = pixels.to(model.device, model.dtype)
    if image_maps is None:
        image_maps = _explain_maps(model, pixels, texts, method, seed, opts)
    orig = prepare_image_maps(image_maps, (pixels.shape[-2], pixels.shape[-1]), n, pixels.device)
    work = copy.deepcopy(model)
    try:
        blocks = work.image.block_modules()
    except NotImplementedError as e:
        raise MethodError(f"the sanity check needs the image tower's blocks: {e}") from e
    gen = torch.Generator().manual_seed(int(init_seed))
    stages, sp, spa, ss = [], [], [], []
    for i in reversed(range(len(blocks))):
        reinit_module(blocks[i], gen)
        rand = _explain_maps(work, pixels, texts, method, seed, opts).to(orig.device)
        rand = prepare_image_maps(rand, (orig.shape[-2], orig.shape[-1]), n, orig.device)
        stages.append(f"block_{i}")
        sp.append(spearman(orig.flatten(1), rand.flatten(1)))
        spa.append(spearman(orig.abs().flatten(1), rand.abs().flatten(1)))
        ss.append(ssim(minmax01(orig), minmax01(rand)))
    del work
    return {
        "stages": stages,
        "spearman": torch.stack(sp, 1),
        "spearman_abs": torch.stack(spa, 1),
        "ssim": torch.stack(ss, 1),
    }
