"""Contract tests generated from the method registry: every method x every model kind.

For each side a method applies to: output shapes and dtypes, finite values, same seed -> same
result, a batch of pairs == the pairs one at a time, no hooks left on the model, inputs and
parameters untouched, ``requires_grad`` flags and train/eval mode restored. Sides a method does not
apply to must be refused with a MethodError.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

import vlexplain as vx
from vlexplain.attribution.base import image_grid_size
from vlexplain.errors import MethodError
from vlexplain.models.families import families

#: the families of the families table whose tiny models the fixtures do not cover
FAMILY_KINDS = [
    f.key
    for f in families()
    if f.library in ("transformers", "open_clip") and f.key not in ("hf-clip", "hf-siglip", "open_clip-vit")
]
KINDS = ["hf_clip", "oc_clip", "siglip", "offline", *FAMILY_KINDS]

#: cheap options per method so that the whole file runs quickly (defaults for methods not listed);
#: keys a method does not take are dropped, so aliases can be listed side by side
CHEAP: dict[str, dict[str, Any]] = {
    "m2ib": dict(steps=2, num_samples=2),
    "m2ib_fast": dict(steps=2),
    "rise": dict(n_masks=64),
    "kernel_shap": dict(n_samples=32),
    "integrated_gradients": dict(steps=4, n_steps=4),
    "smoothgrad": dict(n_samples=4, num_samples=4),
}
#: the offline model runs a 224-px CNN on a shared CPU: fewer perturbed inputs there
CHEAP_OFFLINE: dict[str, dict[str, Any]] = {
    "rise": dict(n_masks=8),
    "kernel_shap": dict(n_samples=8),
}
TEXTS = ["a photo of a small cat on the floor", "two dogs"]  # different lengths: padding differs per batch


def cheap_options(name: str, kind: str) -> dict[str, Any]:
    opts = {**CHEAP.get(name, {}), **(CHEAP_OFFLINE.get(name, {}) if kind == "offline" else {})}
    params = inspect.signature(vx.get_method(name).__init__).parameters
    return {k: v for k, v in opts.items() if k in params}


def _images(model, kind: str) -> torch.Tensor:
    """(2, 3, H, W) preprocessed images: real photos for the offline model, noise for tiny models."""
    if kind == "offline":
        from PIL import Image
        from skimage import data

        photos = [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]
        return torch.stack([model.preprocess(p) for p in photos]).to(model.device, model.dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, *model.input_size, generator=g)
    mean = torch.tensor(model.mean).view(3, 1, 1)
    std = torch.tensor(model.std).view(3, 1, 1)
    return ((x - mean) / std).to(model.device, model.dtype)


def _hook_state(model) -> dict[str, int]:
    out = {}
    for n, m in model.named_modules():
        k = sum(
            len(getattr(m, a, {}) or {})
            for a in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        )
        if k:
            out[n or "<root>"] = k
    for n, p in model.named_parameters():
        if getattr(p, "_backward_hooks", None):
            out[f"param {n}"] = len(p._backward_hooks)
    import torch.nn.modules.module as mm

    for a in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    ):
        if getattr(mm, a, None):
            out[f"global {a}"] = len(getattr(mm, a))
    return out


def _close(a: torch.Tensor, b: torch.Tensor, what: str, floor: float = 0.0) -> None:
    """Equal up to 1e-4 of the map's range, or ``floor`` (the float32 noise of the scores a
    gradient-free map is made of: a map that barely varies cannot be compared below it)."""
    scale = float(b.abs().max()) if b.numel() else 0.0
    atol = max(1e-4 * scale + 1e-8, floor)
    torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=lambda m: f"{what}: {m}")


def _check_one(e, model, sides, grid) -> None:
    if "image" in sides:
        assert e.image_map is not None and e.patch_map is not None
        assert tuple(e.image_map.shape) == tuple(model.input_size)
        assert e.patch_map.dim() == 2
        if model.image.kind == "vit":
            assert tuple(e.patch_map.shape) == tuple(grid)
        for t in (e.image_map, e.patch_map):
            assert t.is_floating_point() and t.device == model.device
            assert torch.isfinite(t).all(), "non-finite image map"
    else:
        assert e.image_map is None and e.patch_map is None
    if "text" in sides:
        assert e.token_scores is not None
        assert tuple(e.token_scores.shape) == (len(e.tokens),) and len(e.tokens) > 0
        assert e.token_scores.is_floating_point() and e.token_scores.device == model.device
        assert torch.isfinite(e.token_scores).all(), "non-finite token scores"
    else:
        assert e.token_scores is None


def _maps(e) -> dict[str, torch.Tensor]:
    return {
        k: v
        for k, v in (("image_map", e.image_map), ("patch_map", e.patch_map), ("token_scores", e.token_scores))
        if v is not None
    }


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", vx.list_methods())
def test_method_contract(name: str, kind: str, request) -> None:
    model = request.getfixturevalue("family_model")(kind) if kind in FAMILY_KINDS else request.getfixturevalue(kind)
    check_contract(name, kind, model, cheap_options(name, kind))


#: the bridged methods (captum:<Algorithm>) run the same contract on a CLIP ViT and on the offline model
BRIDGED = [n for n in vx.list_methods(bridged=True) if ":" in n]
#: cheap options of the bridged methods (keys a method does not take are dropped)
BRIDGE_CHEAP: dict[str, Any] = dict(n_steps=4, n_samples=4, perturbations_per_eval=64)
BRIDGE_CHEAP_OFFLINE: dict[str, Any] = dict(grid=3, n_samples=2, n_steps=2)


def bridge_options(name: str, kind: str) -> dict[str, Any]:
    opts = {**BRIDGE_CHEAP, **(BRIDGE_CHEAP_OFFLINE if kind == "offline" else {})}
    if name.endswith(":ShapleyValues"):
        opts.pop("grid", None)
    params = inspect.signature(vx.get_method(name).__init__).parameters
    return {k: v for k, v in opts.items() if k in params}


@pytest.mark.parametrize("kind", ["hf_clip", "offline"])
@pytest.mark.parametrize("name", BRIDGED)
def test_bridged_method_contract(name: str, kind: str, request) -> None:
    check_contract(name, kind, request.getfixturevalue(kind), bridge_options(name, kind))


@pytest.mark.parametrize("kind", ["hf_clip", "offline"])
def test_at_least_twelve_captum_algorithms_apply(kind: str, request) -> None:
    model = request.getfixturevalue(kind)
    both = [n for n in BRIDGED if n.startswith("captum:") and vx.get_method(n).why_not(model, "image") is None]
    assert len(both) >= 12, both


def check_contract(name: str, kind: str, model, opts: dict[str, Any]) -> None:
    cls = vx.get_method(name)
    sides = [s for s in ("image", "text") if cls.why_not(model, s) is None]
    images = _images(model, kind)

    for s in ("image", "text"):  # sides that do not apply are refused with a clear error
        if s not in sides:
            with pytest.raises(MethodError):
                vx.explain(model, images[0], TEXTS[0], method=name, sides=[s], **opts)
    if not sides:
        return

    pixels_before = images.clone()
    params_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hooks_before = _hook_state(model)
    params = list(model.parameters())
    # a mixed pattern of flags, so that "set everything to True/False" afterwards is caught
    flags_orig = [p.requires_grad for p in params]
    pattern = [i % 3 != 0 for i in range(len(params))]
    grads_before = [p.grad for p in params]
    was_training = model.training
    try:
        for p, f in zip(params, pattern):
            p.requires_grad_(f)
        kw = dict(method=name, seed=0, sides=sides, **opts)
        batched = vx.explain(model, images, TEXTS, batch_size=2, **kw)
        single = vx.explain(model, images, TEXTS, batch_size=1, **kw)
        again = vx.explain(model, images[:1], TEXTS[0], batch_size=1, **kw)
        assert [p.requires_grad for p in params] == pattern, "requires_grad flags were not restored"
    finally:
        for p, f in zip(params, flags_orig):
            p.requires_grad_(f)

    grid = image_grid_size(model)
    assert isinstance(batched, list) and len(batched) == 2 and len(single) == 2
    for e in [*batched, *single, again]:
        _check_one(e, model, sides, grid)
        assert e.method == name
    # same seed, same input, same batch -> the same result
    for k, v in _maps(again).items():
        assert torch.equal(v, _maps(single[0])[k]), f"{k} differs between two identical runs"
    # a pair's result does not depend on the rest of the batch
    for j in range(2):
        for k, v in _maps(batched[j]).items():
            # perturbation maps are differences of scores: batch and single forwards may round
            # each score differently by a few float32 ulps (1e-6 of the score covers ~10); so are
            # bridged attributions in the score's units (a block's gradient x activation on a
            # LayerNorm'd state cancels to such noise)
            floor = 1e-6 * abs(single[j].score) if not cls.needs_gradients or ":" in name else 0.0
            _close(v, _maps(single[j])[k], f"pair {j} {k}: batch of 2 vs one at a time", floor)

    assert torch.equal(images, pixels_before), "the input pixels were modified"
    assert _hook_state(model) == hooks_before == {}, f"hooks left on the model: {_hook_state(model)}"
    after = model.state_dict()
    changed = [k for k, v in params_before.items() if not torch.equal(v, after[k])]
    assert not changed, f"parameters/buffers changed: {changed[:5]}"
    assert all(p.grad is g for p, g in zip(params, grads_before)), "gradients were left in the parameters"
    assert model.training == was_training


@pytest.mark.parametrize("name", vx.list_methods(bridged=True))
def test_registry_entry(name: str) -> None:
    cls = vx.get_method(name)
    assert cls.name == name and cls.summary, "every method needs a name and a one-line summary"
    assert set(cls.sides) <= {"image", "text"} and cls.sides
    assert cls.__doc__ and cls.__doc__.strip()
