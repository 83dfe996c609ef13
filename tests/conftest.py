"""Shared fixtures: tiny models of every adapter kind (random weights, no download).

Fixtures used by one folder only live in that folder's conftest.py (``tests/app/conftest.py``);
plain helpers that tests import are in ``tests/support/``.
"""

from __future__ import annotations

import pytest
import torch

from tests.support.models import tiny_hf_clip, tiny_open_clip
from tests.support.threads import THREADS
from vlexplain.models.hf_clip import tiny_siglip

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
                fam = get_family(key)
                cache[key] = vx.load_model(fam.tiny(), tokenizer=fam.tiny_tokenizer())
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
