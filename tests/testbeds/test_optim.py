"""The float32, shape-batched Muon against torch.optim.Muon, and the shapes trainer's parameter split."""

import pytest
import torch

from vlexplain.testbeds.optim import Muon, Optimizers, orthogonalize


def test_orthogonalize_flattens_the_spectrum_like_an_svd():
    torch.manual_seed(0)
    g = torch.randn(3, 16, 48) * torch.logspace(-2, 1, 48)  # badly conditioned, wide matrices
    x = orthogonalize(g)
    s = torch.linalg.svdvals(x)
    assert s.min() > 0.3 and s.max() < 1.6  # Muon's iteration: singular values near 1, not exactly 1
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = torch.nn.functional.cosine_similarity((u @ vh).flatten(1), x.flatten(1))
    assert (cos > 0.95).all()
    tall = orthogonalize(g.mT)  # tall matrices are handled through their transpose
    assert torch.allclose(tall, x.mT, atol=1e-6)


def test_muon_takes_the_steps_of_torch_muon():
    torch.manual_seed(1)
    shapes = [(8, 8), (8, 32), (32, 8), (8, 8), (16, 24)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    a = Muon(ours, lr=0.01, weight_decay=0.1)
    b = torch.optim.Muon(theirs, lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(4):  # momentum buffers carry over between steps
        for p, q in zip(ours, theirs):
            g = torch.randn(p.shape)
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    for p, q, p0 in zip(ours, theirs, start):
        moved_ours, moved_theirs = (p - p0).detach(), (q - p0).detach()
        # torch runs the iteration in bfloat16, this one in float32: equal up to bfloat16 rounding
        rel = (moved_ours - moved_theirs).norm() / moved_theirs.norm()
        assert rel < 0.03, (tuple(p.shape), float(rel))
        assert moved_theirs.norm() > 1e-3


def test_muon_refuses_non_matrices_and_skips_parameters_without_gradients():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(4))])
    p, q = torch.nn.Parameter(torch.ones(4, 4)), torch.nn.Parameter(torch.ones(4, 4))
    p.grad = torch.randn(4, 4)
    Optimizers([Muon([p, q], lr=0.1)]).step()
    assert not torch.equal(p, torch.ones(4, 4)) and torch.equal(q, torch.ones(4, 4))


def test_shapes_trainer_gives_muon_the_block_matrices_and_adamw_the_rest():
    import vlexplain.testbeds.shapes_train as st

    cfg = st.ShapesCLIPConfig(
        vision_width=32,
        vision_layers=2,
        text_width=32,
        text_layers=1,
        projection_dim=16,
        optimizer="muon",
        muon_lr=0.01,
        lr=0.001,
    )
    model = st.build_model(cfg, 50, seed=0)
    bias = torch.nn.Parameter(torch.tensor(-10.0))
    opt = st._optimizer(model, bias, cfg)
    adam, muon = opt.opts
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = {names[id(p)] for p in muon.param_groups[0]["params"]}
    assert len(in_muon) == 3 * 6  # three blocks in all (q, k, v, out, fc1, fc2 weights each)
    assert all(".encoder.layers." in n and n.endswith("weight") and "norm" not in n for n in in_muon)
    in_adam = [p for p in adam.param_groups[0]["params"]]
    assert any(p is bias for p in in_adam)
    assert len(in_adam) - 1 + len(in_muon) == len(list(model.parameters()))  # each parameter exactly once
    assert [g["peak_lr"] for g in opt.param_groups] == [0.001, 0.01]
    with pytest.raises(ValueError, match="optimizer"):
        st._optimizer(model, bias, st.ShapesCLIPConfig(optimizer="sgd"))
