"""``explain``: the public entry point for attributions."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import InputError, MethodError
from ..images import ImageLike, check_image_size, load_image
from ..models.base import DualEncoder, TextBatch
from .base import (
    SIDES,
    ContrastInfo,
    Explainer,
    Explanation,
    Side,
    brief_reason,
    get_method,
    image_grid_size,
    pool_to_grid,
    run_contrast,
    run_explainer,
    upsample_grid,
)
from .contrast import Versus, VersusImage, VersusText, bind_versus, resolve_target
from .targets import Contrast, Target, make_target

TextLike = str | Sequence[str]


def prepare_images(model: DualEncoder, images: ImageLike | Sequence[ImageLike]) -> Tensor:
    """Paths, PIL images, arrays or tensors -> (N, 3, H, W) preprocessed pixels on the model's device."""
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"image tensors must be (3, H, W) or (N, 3, H, W), got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != tuple(model.input_size):
            raise InputError(
                f"preprocessed image tensors must be {model.input_size[0]}x{model.input_size[1]} for this model, "
                f"got {images.shape[-2]}x{images.shape[-1]}"
            )
        return images.to(model.device, model.dtype)
    if isinstance(images, (str, Image.Image, np.ndarray)) or hasattr(images, "__fspath__"):
        images = [images]
    out = []
    for im in images:
        if isinstance(im, np.ndarray):
            im = Image.fromarray(im)
        if isinstance(im, Tensor):
            out.append(prepare_images(model, im))
            continue
        pil = load_image(im)
        if not isinstance(im, Image.Image):  # a path: a refusal names the file
            check_image_size(pil, model.input_size, str(im), warn=False)
        out.append(model.preprocess(pil)[None].to(model.device, model.dtype))
    if not out:
        raise InputError("no images given")
    return torch.cat(out)


def _texts(texts: TextLike) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise InputError("no texts given")
    from ..textclean import clean_texts

    return clean_texts(texts)  # no visible character: InputError; control characters removed (a warning)


def _broadcast(n_img: int, n_txt: int) -> tuple[list[int], list[int]]:
    if n_img == n_txt:
        return list(range(n_img)), list(range(n_txt))
    if n_img == 1:
        return [0] * n_txt, list(range(n_txt))
    if n_txt == 1:
        return list(range(n_img)), [0] * n_img
    raise InputError(f"{n_img} images and {n_txt} texts: pass equal numbers (zipped) or one of either (broadcast)")


def explain(
    model: DualEncoder,
    images: ImageLike | Sequence[ImageLike],
    texts: TextLike,
    method: str = "m2ib",
    *,
    seed: int | Sequence[int] | None = 0,
    generator: torch.Generator | None = None,
    target: str | None = None,
    candidates: Sequence[str] | None = None,
    versus: VersusText | None = None,
    versus_image: VersusImage | None = None,
    sides: Sequence[Side] | None = None,
    batch_size: int = 8,
    **options: Any,
) -> Explanation | list[Explanation]:
    """Explain image-text pairs with a registered method.

    Args:
        model: a [`DualEncoder`][vlexplain.DualEncoder] from [`vlexplain.load_model`][vlexplain.load_model].
        images: a path, PIL image, array, (3,H,W) or (N,3,H,W) preprocessed tensor, or a list.
        texts: a string or a list of strings. Pairs are zipped; one image or one text broadcasts.
        method: a name from [`vlexplain.list_methods`][vlexplain.list_methods].
        seed: seed for stochastic methods: one int that every pair uses (a pair's result then does not
            depend on batching or on the other pairs), or one int per pair (what the evaluation runner
            passes, so that a random reference or a noise draw is not the same for every pair).
        generator: alternatively, a torch.Generator from which one seed is drawn for this call.
        target: "cosine" (the default without ``versus``), "logit", "softmax" (needs ``candidates``)
            or "contrast" (the default with ``versus`` or ``versus_image``).
        candidates: candidate texts for the softmax target.
        versus: "why the text rather than this one": the maps explain
            ``cos(image, text) - cos(image, versus)``. One text, or one per pair.
        versus_image: "why the image ranks above this one for the text": the maps explain
            ``cos(image, text) - cos(versus_image, text)``; each Explanation's ``versus`` holds the
            map of the same difference on the versus image. One image, or one per pair.
        sides: which sides to explain (default: every side the method applies to).
        batch_size: pairs per batch.
        **options: the method's options (e.g. ``layer``, ``beta``, ``steps`` for m2ib).

    Returns:
        One [`Explanation`][vlexplain.Explanation] for one image and one text, else a list (one per pair).

    Example:
        >>> exp = explain(load_model("offline"), "cat.jpg", "a cat", method="m2ib")
        >>> why = explain(model, "street.jpg", "a bus", method="gradient_x_input", versus="a tree")
    """
    single = (isinstance(texts, str)) and not _is_multi_image(images)
    target = resolve_target(target, versus, versus_image)
    cls = get_method(method)
    if sides is None:
        sides = [s for s in SIDES if cls.why_not(model, s) is None]
        if not sides:
            raise MethodError(not_applicable(cls, model))
    for s in sides:
        why = cls.why_not(model, s)
        if why is not None:
            raise MethodError(brief_reason(why) + "; " + _applicable_list(model, s))
    if target == "contrast" and (why := cls.why_not_contrast()) is not None:
        raise MethodError(why)
    explainer = cls.create(model, **options)
    pixels = prepare_images(model, images)
    tlist = _texts(texts)
    ii, ti = _broadcast(pixels.shape[0], len(tlist))
    vs = None
    if target == "contrast":
        vs = bind_versus(model, versus, versus_image, pixels, ii, [tlist[t] for t in ti], prepare_images)
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    seeds = _pair_seeds(seed, len(ii))
    results: list[Explanation | None] = [None] * len(ii)
    # group by text so that the softmax target can exclude the explained text from its candidates
    groups: dict[str, list[int]] = {}
    for k, t in enumerate(ti):
        groups.setdefault(tlist[t] if target == "softmax" else "", []).append(k)
    run = _Run(explainer, pixels, tlist, ii, ti, seeds, list(sides), vs)
    for gtext, members in groups.items():
        tgt = make_target(model, target, list(candidates or []), exclude=gtext or None)
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            for k, e in zip(chunk, run.chunk(chunk, tgt)):
                results[k] = e
    out = [r for r in results if r is not None]
    return out[0] if single and len(out) == 1 else out


@dataclass
class _Run:
    """One ``explain`` call's inputs, explained chunk by chunk."""

    explainer: Explainer
    pixels: Tensor  # (N, 3, H, W)
    texts: list[str]
    image_of: list[int]  # pair -> row of ``pixels``
    text_of: list[int]  # pair -> index in ``texts``
    seeds: list[int]
    sides: list[Side]
    versus: Versus | None

    def chunk(self, chunk: list[int], tgt: Target) -> list[Explanation]:
        model, ex = self.explainer.model, self.explainer
        px = self.pixels[[self.image_of[k] for k in chunk]]
        tb = model.tokenize([self.texts[self.text_of[k]] for k in chunk])
        seeds = [self.seeds[k] for k in chunk]
        t0 = time.perf_counter()
        if self.versus is None:
            img, tok, score = run_explainer(ex, px, tb, tgt, seeds, self.sides)
            return self._explanations(chunk, tgt, px, tb, img, tok, score, _seconds(model, t0, chunk))
        con = self.versus.contrast(model, chunk)
        img, tok, ie, te = run_contrast(ex, px, tb, tgt, seeds, self.sides, con)
        score, vscore = (ie * te).sum(-1), con.versus_scores(ie, te)
        lower = None
        if con.versus_image is not None and "image" in self.sides:  # the same difference, on each versus image
            assert self.versus.pixels is not None
            on_b = Contrast(versus_image=ie, lower=True)
            lower = run_contrast(ex, self.versus.pixels[chunk], tb, tgt, seeds, ["image"], on_b)
        dt = _seconds(model, t0, chunk)
        out = self._explanations(chunk, tgt, px, tb, img, tok, score, dt)
        for j, (k, e) in enumerate(zip(chunk, out)):
            e.contrast = ContrastInfo(self.versus.kind, self.versus.names[k], float(score[j]), float(vscore[j]))
            e.settings["versus"] = self.versus.names[k]
        if self.versus.pixels is not None:
            b_img = None if lower is None else lower[0]
            b = self._explanations(chunk, tgt, self.versus.pixels[chunk], tb, b_img, None, vscore, dt)
            for e, v in zip(out, b):
                assert e.contrast is not None
                v.contrast = dataclasses.replace(e.contrast, role="versus")
                v.settings["versus"] = e.contrast.versus
                e.versus = v
        return out

    def _explanations(
        self,
        chunk: list[int],
        tgt: Target,
        px: Tensor,
        tb: TextBatch,
        img: Tensor | None,
        tok: Tensor | None,
        score: Tensor,
        dt: float,
    ) -> list[Explanation]:
        """One Explanation per pair of ``chunk`` from a batch's maps (B, ...) and scores (B,)."""
        model, ex = self.explainer.model, self.explainer
        patch = full = None
        pixel_level = img is not None and tuple(img.shape[-2:]) == tuple(model.input_size)
        if img is not None:
            if pixel_level:
                full, patch = img, pool_to_grid(img, image_grid_size(model))
            else:
                patch, full = img, upsample_grid(img, model.input_size)
        settings = {**ex.settings(), "target": tgt.kind, "model": model.name}
        out = []
        for j, k in enumerate(chunk):
            cm = tb.content_mask[j]
            out.append(
                Explanation(
                    image_map=None if full is None else full[j],
                    patch_map=None if patch is None else patch[j],
                    token_scores=None if tok is None else tok[j][cm],
                    tokens=tb.shown_tokens(j),
                    score=float(score[j]),
                    method=ex.name,
                    settings={**settings, "seed": self.seeds[k]},
                    text=self.texts[self.text_of[k]],
                    pixels=px[j],
                    mean=tuple(model.mean),
                    std=tuple(model.std),
                    seconds=dt,
                    map_resolution="pixel" if pixel_level else "patch",
                )
            )
        return out


def _seconds(model: DualEncoder, t0: float, chunk: list[int]) -> float:
    """Seconds per pair since ``t0`` (CUDA work finished first)."""
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / len(chunk)


def _pair_seeds(seed: int | Sequence[int] | None, n: int) -> list[int]:
    """One seed per pair from ``explain``'s ``seed`` argument (each a whole number in 0 .. 2**63 - 1)."""
    from ..validate import check_seed

    if seed is None:
        return [0] * n
    if isinstance(seed, (int, np.integer)):
        return [check_seed(int(seed), "seed")] * n
    if isinstance(seed, (str, bytes)) or not hasattr(seed, "__iter__"):
        raise InputError(f"seed must be a whole number or one per pair, got {seed!r}")
    seeds = [check_seed(int(s) if isinstance(s, np.integer) else s, "seed") for s in seed]
    if len(seeds) != n:
        raise InputError(f"got {len(seeds)} seeds for {n} image-text pairs; give one seed, or one per pair")
    return seeds


def _is_multi_image(images: Any) -> bool:
    if isinstance(images, Tensor):
        return images.dim() == 4 and images.shape[0] > 1
    if isinstance(images, (str, Image.Image, np.ndarray)) or hasattr(images, "__fspath__"):
        return False
    return True


def _applicable_list(model: DualEncoder, side: str) -> str:
    from .base import methods_for

    ok = [n for n, s in methods_for(model).items() if side in s]
    return f"methods that apply to the {side} side of this model: {', '.join(ok)}"


def not_applicable(cls, model: DualEncoder) -> str:
    """One line for a method that applies to neither side: why, side by side, and what applies instead."""
    why = "; ".join(f"{s} side: {brief_reason(cls.why_not(model, s) or '')}" for s in ("image", "text"))
    return f"{cls.name} does not apply to this model ({why}); " + "; ".join(
        _applicable_list(model, s) for s in ("image", "text")
    )
