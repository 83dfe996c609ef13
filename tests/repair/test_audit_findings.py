"""The audit findings of RESULTS ("Which M2IB layer and beta see the badge", "Heads that carry the
badge") hold on a small block of the testbed's scenes: the shipped models and the scenes are fixed,
so these fail if the sweep, the decomposition or the models change what they find."""

from __future__ import annotations

import pytest

import vlexplain as vx
from vlexplain.repair.audit_layers import sweep_layers
from vlexplain.repair.data import audit_pairs
from vlexplain.repair.heads import audit_heads


@pytest.fixture(scope="module")
def pairs():
    return audit_pairs("spurious:16")  # 16 scenes per group, aligned and conflicting


def test_m2ib_sees_the_badge_one_block_below_its_default(pairs):
    sweep = sweep_layers(
        vx.load_model("testbed:spurious"),
        pairs,
        reference=vx.load_model("testbed:shapes"),
        methods=["m2ib"],
        layers=[0, 1],
        betas=[0.1, 3.0],
    )
    assert sweep.defaults["m2ib"] == 1
    rows = {(r.layer, r.beta): r for r in sweep.rows}
    low, default = rows[(0, 3.0)], rows[(1, 0.1)]
    assert low.diff is not None and default.diff is not None
    # biased minus clean normalised share on the aligned pairs: clear of zero at block 0 / beta 3 ...
    assert low.diff[1] > 0
    # ... and not at the default, whose difference is several times smaller
    assert default.diff[1] < 0 < default.diff[2]
    assert low.diff[0] > 3 * default.diff[0]


def test_the_badge_heads_lead_the_audit(pairs):
    audit = audit_heads(vx.load_model("testbed:spurious"), pairs)
    assert set(audit.top(2)) == {(2, 0), (1, 1)}
    for row in audit.rows[:2]:
        assert row.focus[1] > 0  # the interval of the mean change over aligned scenes is above zero
    # no other head's part rises by a fifth as much
    assert max(r.focus[0] for r in audit.rows[2:]) < 0.2 * min(r.focus[0] for r in audit.rows[:2])
