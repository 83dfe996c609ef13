"""The shapes CLIP's fast-start recipe: structured image-tower initialisation and token dropping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlexplain.testbeds.shapes_train import ShapesCLIPConfig, _embed, build_model
from vlexplain.testbeds.vit_init import low_rank_factors, sincos_2d


def test_sincos_codes_against_the_formula():
    pe = sincos_2d(grid=8, dim=64)
    assert pe.shape == (64, 64)
    q = 16
    for row, col, j in [(0, 0, 0), (2, 5, 3), (7, 1, 15), (4, 4, 8)]:
        w = 10_000.0 ** (-j / (q - 1))
        p = pe[row * 8 + col]
        assert p[j] == pytest.approx(math.sin(col * w), abs=1e-6)
        assert p[q + j] == pytest.approx(math.cos(col * w), abs=1e-6)
        assert p[2 * q + j] == pytest.approx(math.sin(row * w), abs=1e-6)
        assert p[3 * q + j] == pytest.approx(math.cos(row * w), abs=1e-6)
    # nearby patches have more similar codes than distant ones
    sim = pe @ pe.T
    assert sim[0, 1] > sim[0, 7] and sim[0, 8] > sim[0, 63]
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(4, 30)


def test_low_rank_factors_are_the_best_approximation():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 12, generator=g) / 12**0.5 + 0.7 * torch.eye(12)
    left, right = low_rank_factors(m, 12)
    assert torch.allclose(left @ right, m, atol=1e-5)
    left, right = low_rank_factors(m, 4)
    assert left.shape == (12, 4) and right.shape == (4, 12)
    s = torch.linalg.svdvals(m)
    # Eckart-Young: the error of the best rank-4 approximation is the energy of the other singular values
    assert torch.linalg.matrix_norm(m - left @ right) ** 2 == pytest.approx(float((s[4:] ** 2).sum()), rel=1e-4)
    assert torch.linalg.matrix_rank(left @ right) == 4


def _first_layer_local_attention(model) -> float:
    """Mean attention mass of patch tokens on their 3x3 neighbourhood, first layer, flat image."""
    vm = model.vision_model
    with torch.no_grad():
        x = vm.pre_layrnorm(vm.embeddings(torch.zeros(1, 3, 64, 64)))
        layer = vm.encoder.layers[0]
        att = layer.self_attn
        y = layer.layer_norm1(x)
        shape = (1, x.shape[1], att.num_heads, att.head_dim)
        q, k = (p(y).view(shape).transpose(1, 2) for p in (att.q_proj, att.k_proj))
        attn = (q @ k.transpose(-1, -2) * att.scale).softmax(-1)[0, :, 1:, 1:]
    i = torch.arange(64)
    near = ((i[:, None] // 8 - i[None] // 8).abs() <= 1) & ((i[:, None] % 8 - i[None] % 8).abs() <= 1)
    return float((attn * near).sum(-1).mean())


@torch.no_grad()
def test_mimetic_init_starts_with_local_attention():
    mimetic = build_model(ShapesCLIPConfig(), vocab_size=40, seed=0)
    plain = build_model(ShapesCLIPConfig(init="default"), vocab_size=40, seed=0)
    emb = mimetic.vision_model.embeddings
    assert torch.equal(emb.position_embedding.weight[0], torch.zeros(64))
    assert torch.allclose(emb.position_embedding.weight[1:], sincos_2d(8, 64))
    assert float(emb.patch_embedding.weight.std()) == pytest.approx(192**-0.5, rel=0.1)  # unit-variance patch codes
    for layer in mimetic.vision_model.encoder.layers:
        att = layer.self_attn
        vo = att.out_proj.weight @ att.v_proj.weight
        assert float(vo.diagonal().mean()) == pytest.approx(-0.4, abs=0.06)  # alpha Z - beta I
        for h in range(att.num_heads):  # each head: a rank-head_dim W_q^T W_k with a positive diagonal
            s = slice(h * att.head_dim, (h + 1) * att.head_dim)
            qk = att.q_proj.weight[s].T @ att.k_proj.weight[s]
            assert torch.linalg.matrix_rank(qk) == att.head_dim and float(qk.diagonal().mean()) > 0.1
    # flat image: tokens differ only by position, so where attention goes shows the start's bias
    assert _first_layer_local_attention(plain) < 0.13  # about uniform (9 of 65 tokens)
    assert _first_layer_local_attention(mimetic) > 0.2
    # the text tower is left as transformers initialises it
    for a, b in zip(mimetic.text_model.parameters(), plain.text_model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="init"):
        build_model(ShapesCLIPConfig(init="xavier"), vocab_size=40, seed=0)


def test_token_dropping_path():
    model = build_model(ShapesCLIPConfig(vision_layers=2, text_layers=1), vocab_size=40, seed=1).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 64, 64, generator=g)
    full = _embed(model, pixels=x)
    # keeping every token, in any order, is the ordinary forward (positions are added before dropping)
    perm = torch.stack([torch.randperm(64, generator=g) for _ in range(3)])
    assert torch.allclose(_embed(model, pixels=x, keep=perm), full, atol=1e-5)
    # with half the tokens kept, a dropped patch's pixels do not matter and a kept one's do
    keep = perm[:, :32]
    part = _embed(model, pixels=x, keep=keep)
    assert not torch.allclose(part, full, atol=1e-3)
    assert torch.allclose(_embed(model, pixels=x, keep=keep.flip(1)), part, atol=1e-5)
    patch = lambda j: (slice(None), slice(8 * (j // 8), 8 * (j // 8) + 8), slice(8 * (j % 8), 8 * (j % 8) + 8))
    dropped, kept = int(perm[0, 40]), int(perm[0, 0])
    y = x.clone()
    y[0][patch(dropped)] += 3.0
    assert torch.allclose(_embed(model, pixels=y, keep=keep)[0], part[0], atol=1e-6)
    y = x.clone()
    y[0][patch(kept)] += 3.0
    assert not torch.allclose(_embed(model, pixels=y, keep=keep)[0], part[0], atol=1e-4)


def test_bad_recipe_settings_fail_before_training(tmp_path):
    from vlexplain.testbeds.shapes_train import train_shapes

    with pytest.raises(ValueError, match="token_drop"):
        train_shapes(minutes=0.1, out_dir=tmp_path / "m", config=ShapesCLIPConfig(token_drop=1.0), progress=False)
    with pytest.raises(ValueError, match="init"):
        train_shapes(minutes=0.1, out_dir=tmp_path / "m", config=ShapesCLIPConfig(init="zeros"), progress=False)
    assert not (tmp_path / "m").exists()


def test_random_shift_against_a_plain_reference():
    from vlexplain.testbeds.shapes_losses import random_shift

    x = torch.randn(6, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    got = random_shift(x, 3, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # the same draws: all vertical offsets, then all horizontal ones
    dy, dx = (torch.randint(0, 7, (6, 1), generator=gen) for _ in range(2))
    for b in range(6):
        padded = np.pad(x[b].numpy(), ((0, 0), (3, 3), (3, 3)), mode="edge")
        want = padded[:, int(dy[b]) : int(dy[b]) + 10, int(dx[b]) : int(dx[b]) + 12]
        assert np.array_equal(got[b].numpy(), want)
    assert len({(int(a), int(c)) for a, c in zip(dy, dx)}) > 1  # offsets differ between images
    assert torch.equal(random_shift(x, 0), x)
