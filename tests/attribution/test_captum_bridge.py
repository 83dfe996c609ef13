"""The Captum bridge (``captum:<Algorithm>``) and the SmoothGrad option of the gradient methods.

The bridge equals vlexplain's own implementation where both exist (integrated gradients,
saliency, gradient x input, Grad-CAM, exact Shapley values on the same regions); refusals are
one line; every listed algorithm runs on every tiny family; SmoothGrad is checked against a
literal average over the same noise.
"""

from __future__ import annotations

import inspect
import sys
import warnings

import pytest
import torch

import vlexplain as vx
from vlexplain.attribution.smooth import noise_seed, pair_noise
from vlexplain.cli import main
from vlexplain.errors import MethodError, MissingExtraError
from vlexplain.models.families import families

TEXTS = ["a photo of a small cat on the floor", "two dogs"]


def _pixels(model, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, *model.input_size, generator=g)
    return ((x - torch.tensor(model.mean).view(3, 1, 1)) / torch.tensor(model.std).view(3, 1, 1)).to(model.dtype)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal up to ``rel`` of the map's range (float32 noise of the compared gradients)."""
    torch.testing.assert_close(a, b, rtol=0, atol=rel * float(b.abs().max()) + 1e-10)


def _options(name: str) -> set[str]:
    return set(inspect.signature(vx.get_method(name).__init__).parameters)


def _both(model, px, method: str, **opts):
    return vx.explain(model, px, TEXTS, method=method, batch_size=2, **opts)


# --- the bridge equals vlexplain's own methods ----------------------------------------------
def test_integrated_gradients_equals_the_native_method(hf_clip):
    px = _pixels(hf_clip)
    ours = _both(hf_clip, px, "integrated_gradients", baseline="black", steps=8)
    theirs = _both(hf_clip, px, "captum:IntegratedGradients", baseline="black", n_steps=8)
    for a, b in zip(theirs, ours):
        _close(a.image_map, b.image_map)
        _close(a.token_scores, b.token_scores)


@pytest.mark.parametrize("pair", [("saliency", "captum:Saliency"), ("gradient_x_input", "captum:InputXGradient")])
def test_gradient_maps_equal_the_native_methods(oc_clip, pair):
    px = _pixels(oc_clip)
    for a, b in zip(_both(oc_clip, px, pair[1]), _both(oc_clip, px, pair[0])):
        _close(a.image_map, b.image_map)
        _close(a.token_scores, b.token_scores)


def test_layer_gradcam_equals_gradcam_on_vit_patches(hf_clip):
    """Captum's LayerGradCam on the bridge's (B, D, gh, gw) view of the patch tokens is vlexplain's
    Grad-CAM (channel weights = mean gradient over patches; ReLU of the weighted sum)."""
    px = _pixels(hf_clip)
    for layer in (0, 1):
        ours = _both(hf_clip, px, "gradcam", layer=layer, sides=["image"])
        theirs = _both(hf_clip, px, "captum:LayerGradCam", layer=layer, relu_attributions=True, sides=["image"])
        for a, b in zip(theirs, ours):
            _close(a.patch_map, b.patch_map)


def test_exact_shapley_values_equal_kernel_shap_on_the_same_regions(hf_clip):
    """2x2 image regions replaced by the mean colour: Captum's ShapleyValues (every ordering) and
    vlexplain's kernel_shap (every coalition, exact kernel weights) are both the exact Shapley
    values; Captum's sampled KernelShap approaches them."""
    px = _pixels(hf_clip)
    exact = _both(hf_clip, px, "kernel_shap", grid=2, n_samples=64, baseline="mean", sides=["image"])
    shapley = _both(hf_clip, px, "captum:ShapleyValues", grid=2, baseline="mean", sides=["image"])
    sampled = _both(hf_clip, px, "captum:KernelShap", grid=2, baseline="mean", n_samples=400, sides=["image"])
    for e, s, k in zip(exact, shapley, sampled):
        floor = 1e-6 * abs(e.score)  # differences of float32 scores
        torch.testing.assert_close(s.patch_map, e.patch_map, rtol=0, atol=1e-4 * float(e.patch_map.abs().max()) + floor)
        err = float((k.patch_map - e.patch_map).abs().max())
        assert err <= 0.15 * float(e.patch_map.abs().max()) + floor, err  # 400 sampled coalitions of 4 regions


def test_targets_reach_captum(hf_clip):
    """The logit target is the scaled cosine: integrated gradients scale with it; softmax runs."""
    px = _pixels(hf_clip)
    cos = _both(hf_clip, px, "captum:IntegratedGradients", n_steps=4)
    logit = _both(hf_clip, px, "captum:IntegratedGradients", n_steps=4, target="logit")
    scale = float(hf_clip.logit_scale)
    for c, lo in zip(cos, logit):
        _close(lo.image_map, scale * c.image_map)
        _close(lo.token_scores, scale * c.token_scores)
    soft = _both(hf_clip, px, "captum:Occlusion", target="softmax", candidates=["a red car", "a tree"])
    assert all(torch.isfinite(e.image_map).all() and torch.isfinite(e.token_scores).all() for e in soft)


def test_options_pass_through_to_captum(hf_clip):
    px = _pixels(hf_clip, 1)
    coarse = vx.explain(
        hf_clip, px, TEXTS[0], method="captum:Occlusion", sliding_window_shapes=[3, 32, 32], sides=["image"]
    )
    assert coarse.settings["sliding_window_shapes"] == [3, 32, 32]
    # a 32-px window with 32-px strides over a 64-px image: a 2x2 block map
    assert len(torch.unique(coarse.image_map)) <= 4
    fine = vx.explain(hf_clip, px, TEXTS[0], method="captum:Occlusion", sides=["image"])
    assert len(torch.unique(fine.image_map)) > 4  # the 4x4 patch grid by default


# --- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, words",
    [
        ("captum:NoiseTunnel", "smooth="),
        ("captum:NeuronGradient", "one unit"),
        ("captum:FeaturePermutation", "other pairs"),
        ("captum:Nonsense", "unknown Captum algorithm"),
    ],
)
def test_algorithms_that_cannot_apply_are_refused_in_one_line(name, words):
    with pytest.raises(MethodError) as e:
        vx.get_method(name)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_refusals_per_model_name_the_reason(hf_clip, offline):
    why = vx.get_method("captum:GuidedBackprop").why_not(hf_clip, "image")
    assert "ReLU" in why and "plain gradients" in why
    assert "LayerNorm" in vx.get_method("captum:LRP").why_not(hf_clip, "text")
    assert "ShapleyValueSampling" in vx.get_method("captum:ShapleyValues").why_not(hf_clip, "text")
    with pytest.raises(MethodError, match="unknown option"):
        vx.explain(hf_clip, _pixels(hf_clip, 1), "a cat", method="captum:Saliency", n_steps=3)
    with pytest.raises(MethodError, match="grid=1 or 2"):
        vx.explain(hf_clip, _pixels(hf_clip, 1), "a cat", method="captum:ShapleyValues", grid=3)


def test_missing_captum_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(MissingExtraError, match=r"vlexplain\[captum\]"):
        vx.get_method("captum:Saliency")
    assert not [n for n in vx.list_methods(bridged=True) if n.startswith("captum:")]


# --- every listed algorithm on every tiny family ----------------------------------------------
FAMILIES = [f.key for f in families() if f.library in ("transformers", "open_clip")]


@pytest.mark.parametrize("key", FAMILIES)
def test_every_listed_algorithm_runs_on_the_family(key, family_model):
    model = family_model(key)
    px = _pixels(model, 1)
    ran = 0
    for name in [n for n in vx.list_methods(bridged=True) if n.startswith("captum:")]:
        cls = vx.get_method(name)
        sides = [s for s in ("image", "text") if cls.why_not(model, s) is None]
        if not sides:
            continue
        opts = {k: v for k, v in dict(n_steps=2, n_samples=2).items() if k in _options(name)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = vx.explain(model, px, "a red square", method=name, sides=sides, **opts)
        maps = [m for m in (e.patch_map, e.token_scores) if m is not None]
        assert len(maps) == len(sides) and all(torch.isfinite(m).all() for m in maps), name
        ran += 1
    assert ran >= 12


# --- SmoothGrad ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["saliency", "gradient_x_input", "integrated_gradients", "gradcam"])
def test_smoothgrad_is_the_mean_over_the_same_noise(hf_clip, method):
    """smooth=smoothgrad equals the plain method averaged over inputs with the pair's noise; the
    squared and variance forms follow from the same samples; a batch equals its pairs."""
    px = _pixels(hf_clip)
    extra = {"steps": 4} if method == "integrated_gradients" else {}
    kw = dict(sides=["image"], seed=[3, 4], **extra)
    n, sd = 3, 0.2
    got = {
        s: _both(hf_clip, px, method, smooth=s, n_samples=n, stdev=sd, **kw)
        for s in ("smoothgrad", "smoothgrad_sq", "vargrad")
    }
    gens = [torch.Generator().manual_seed(noise_seed(s)) for s in (3, 4)]
    key = "patch_map" if method == "gradcam" else "image_map"  # the resolution the method smooths at
    samples = []
    for _ in range(n):
        noisy = px + pair_noise(px, sd, gens)
        samples.append(torch.stack([getattr(e, key) for e in _both(hf_clip, noisy, method, **kw)]))
    s = torch.stack(samples)
    ref = {
        "smoothgrad": s.mean(0),
        "smoothgrad_sq": (s * s).mean(0),
        "vargrad": ((s * s).mean(0) - s.mean(0) ** 2).clamp_min(0),
    }
    for kind, exps in got.items():
        _close(torch.stack([getattr(e, key) for e in exps]), ref[kind], 1e-3)
    one = vx.explain(
        hf_clip,
        px[1:],
        TEXTS[1],
        method=method,
        smooth="smoothgrad",
        n_samples=n,
        stdev=sd,
        seed=4,
        sides=["image"],
        **extra,
    )
    _close(getattr(one, key), getattr(got["smoothgrad"][1], key))


@pytest.mark.parametrize("method", ["saliency", "captum:Saliency"])
def test_smoothing_without_noise_is_the_plain_map(hf_clip, method):
    px = _pixels(hf_clip)
    plain = _both(hf_clip, px, method)
    flat = _both(hf_clip, px, method, smooth="smoothgrad", n_samples=2, stdev=0.0)
    var = _both(hf_clip, px, method, smooth="vargrad", n_samples=2, stdev=0.0)
    for p, f, v in zip(plain, flat, var):
        _close(f.image_map, p.image_map)
        _close(f.token_scores, p.token_scores)
        assert float(v.image_map.abs().max()) <= 1e-6 * float(p.image_map.abs().max() ** 2) + 1e-12


def test_captum_noise_tunnel_is_seeded_and_batch_independent(hf_clip):
    px = _pixels(hf_clip)
    kw = dict(smooth="smoothgrad_sq", n_samples=3, stdev=0.2, seed=[5, 6])
    a = _both(hf_clip, px, "captum:Saliency", **kw)
    b = _both(hf_clip, px, "captum:Saliency", **kw)
    one = vx.explain(hf_clip, px[1:], TEXTS[1], method="captum:Saliency", **{**kw, "seed": 6})
    plain = _both(hf_clip, px, "captum:Saliency")
    assert torch.equal(a[0].image_map, b[0].image_map)
    _close(one.image_map, a[1].image_map)
    _close(one.token_scores, a[1].token_scores)
    assert not torch.allclose(a[0].image_map, plain[0].image_map)
    with pytest.raises(MethodError, match="smooth must be one of"):
        vx.explain(hf_clip, px[:1], "a cat", method="saliency", smooth="blur")
    assert "smooth" not in _options("captum:GradientShap")  # draws its own noisy samples


# --- command line ---------------------------------------------------------------------------------
def test_cli_lists_and_runs_captum(tmp_path, capsys):
    from PIL import Image

    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert "captum:Occlusion" in listing and "captum:LayerGradCam" in listing
    img = tmp_path / "x.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(img)
    out = tmp_path / "out"
    args = ["explain", str(img), "-t", "a red square", "-m", "testbed:shapes", "--out", str(out)]
    assert main([*args, "--method", "captum:Occlusion", "--option", "strides=[3,8,8]"]) == 0
    assert (out / "index.html").exists()
    capsys.readouterr()
    for bad in (["--method", "captum:NoiseTunnel"], ["--method", "captum:Occlusion", "--option", "n_stepz=3"]):
        fresh = tmp_path / "fresh"
        assert main([*args[:-1], str(fresh), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and not fresh.exists(), err
