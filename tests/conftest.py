"""Shared fixtures: tiny models of every adapter kind (random weights, no download)."""

from __future__ import annotations

import os

import pytest
import torch

from vlexplain.models.hf_clip import tiny_clip, tiny_siglip

THREADS = max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(THREADS)


@pytest.fixture(scope="module", autouse=True)
def _threads_restored_per_module():
    """The thread count a module (or its fixtures) set does not reach the next module."""
    yield
    torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _threads_restored():
    """The thread count a test sets does not reach the next test (its module's setting stays)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# The transformers builders are the families table's own (one definition for the fixtures, the
# contract tests over the families and ``vlexplain models``).
tiny_hf_clip = tiny_clip


def two_process_cli(*cli_args: str) -> list[str]:
    """``accelerate launch`` of ``vlexplain`` with two CPU processes on a free port. (``--cpu
    --num_processes 2`` starts a single process unless an MPI hostfile is configured; ``--multi_gpu``
    starts two processes through torch.distributed.run, also on a CPU-only machine.)"""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        "1",
        "--main_process_port",
        str(port),
        "-m",
        "vlexplain.cli",
        *cli_args,
    ]


def tiny_open_clip(image_size: int = 64, patch: int = 16, layers: int = 3, seed: int = 0):
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    m = CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=image_size, patch_size=patch, width=32, layers=layers, head_width=8),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=layers),
    )
    return m.eval()


@pytest.fixture(scope="session")
def hf_clip():
    import vlexplain as vx

    return vx.load_model(tiny_hf_clip())


@pytest.fixture(scope="session")
def siglip():
    import vlexplain as vx

    return vx.load_model(tiny_siglip())


@pytest.fixture(scope="session")
def oc_clip():
    import vlexplain as vx

    return vx.load_model(tiny_open_clip())


@pytest.fixture(scope="session")
def family_model():
    """``get(key)``: the DualEncoder of the tiny model of a family of the families table (built once)."""
    import warnings

    import vlexplain as vx
    from vlexplain.models.families import get_family

    cache = {}

    def get(key: str):
        if key not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[key] = vx.load_model(get_family(key).tiny())
        return cache[key]

    return get


@pytest.fixture(scope="session")
def offline():
    import vlexplain as vx

    return vx.load_model("offline")


TINY_KINDS = ["hf_clip", "oc_clip", "siglip"]
ALL_KINDS = TINY_KINDS + ["offline"]


@pytest.fixture
def any_model(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def rng_images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 64, 64, generator=g)
