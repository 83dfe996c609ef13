"""Targets: cosine, scaled logit and softmax over candidate texts, for every gradient/perturbation method."""

from __future__ import annotations

import pytest
import torch

import vlexplain as vx
from vlexplain.attribution.targets import make_target
from vlexplain.errors import MethodError


def test_target_values(hf_clip):
    px = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tb = hf_clip.tokenize(["a cat", "a dog"])
    with torch.no_grad():
        ie, te = hf_clip.image.encode(px), hf_clip.text.encode(tb)
        cos = torch.nn.functional.cosine_similarity(ie, te)
        torch.testing.assert_close(make_target(hf_clip, "cosine")(ie, te), cos)
        logit = make_target(hf_clip, "logit")(ie, te)
        torch.testing.assert_close(logit, hf_clip.logit_scale * cos)
        sm = make_target(hf_clip, "softmax", ["a cat", "a dog", "a tree"], exclude="a cat")
        cand = hf_clip.encode_text(hf_clip.tokenize(["a dog", "a tree"]))
        logits = hf_clip.logit_scale * torch.cat([cos[:, None], torch.nn.functional.normalize(ie, dim=-1) @ cand.T], 1)
        torch.testing.assert_close(sm(ie, te), logits.softmax(-1)[:, 0])
    with pytest.raises(MethodError):
        make_target(hf_clip, "softmax", ["a cat"], exclude="a cat")
    with pytest.raises(MethodError):
        make_target(hf_clip, "nope")


@pytest.mark.parametrize("method", ["saliency", "gradcam", "integrated_gradients", "rise"])
def test_targets_change_gradient_and_perturbation_maps(hf_clip, method):
    px = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    opts = {"rise": {"n_masks": 64}, "integrated_gradients": {"steps": 4}}.get(method, {})
    maps = {}
    for t in ("cosine", "logit", "softmax"):
        e = vx.explain(hf_clip, px, "a cat", method=method, target=t, candidates=["a dog", "a tree"], **opts)
        assert e.settings["target"] == t and torch.isfinite(e.image_map).all()
        maps[t] = e.patch_map
    if method in ("saliency", "gradcam", "integrated_gradients"):  # the logit is a scaled cosine
        scale = float(hf_clip.logit_scale.detach())
        ratio = maps["logit"].abs().sum() / maps["cosine"].abs().sum()
        assert abs(float(ratio) - scale) / scale < 1e-3
    assert not torch.allclose(maps["softmax"], maps["cosine"])
