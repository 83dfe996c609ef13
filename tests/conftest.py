"""Shared fixtures: tiny models of every adapter kind (random weights, no download).

Fixtures used by one folder only live in that folder's conftest.py (``tests/app/conftest.py``);
plain helpers that tests import are in ``tests/support/``.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.support.models import tiny_hf_clip, tiny_open_clip
from vlexplain.models.hf_clip import tiny_siglip

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
