"""The one validation step (``vlexplain.validate``, ``Explainer.checked_options``) and the explorer's
bounds on each request (``vlexplain.attribution.options``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytest

from vlexplain.attribution.options import MAX_REQUEST_COST, web_options
from vlexplain.errors import InputError, MethodError
from vlexplain.validate import (
    check_metrics_options,
    check_seed,
    check_value,
    parse_json_option,
)

# --- values against type hints -----------------------------------------------------------------------
BAD = object()  # the value is refused


@pytest.mark.parametrize(
    "value,hint,want",
    [
        (5, int, 5),
        (5.0, int, 5),  # an integral float (JSON "5.0") is the whole number
        (2.5, int, BAD),
        (True, int, BAD),  # a bool is not a count
        (2**40, int, BAD),  # beyond a 32-bit int
        (float("nan"), float, BAD),
        (float("inf"), float, BAD),
        (3, float, 3),
        (1, bool, BAD),
        (False, bool, False),
        ("blur", Literal["mean", "blur"], "blur"),
        ("banana", Literal["mean", "blur"], BAD),
        (None, int | None, None),
        ("7", int | None, BAD),
        (["a", "b"], Sequence[str], ["a", "b"]),
        (["a", 3], Sequence[str], BAD),
        ({"k": [1.0, float("inf")]}, dict, BAD),  # no declared type: numbers inside must still be finite
    ],
)
def test_check_value(value, hint, want):
    if want is BAD:
        with pytest.raises(InputError):
            check_value(value, hint, "x")
    else:
        got = check_value(value, hint, "x")
        assert got == want and type(got) is type(want)


def test_method_options_are_checked_against_the_signature():
    import vlexplain as vx

    rise = vx.get_method("rise")
    assert rise.checked_options({"n_masks": 8.0, "p_keep": 0.25}) == {"n_masks": 8, "p_keep": 0.25}
    for bad, msg in [
        ({"n_mask": 8}, "unknown option(s) for rise: n_mask; options: n_masks"),
        ({"n_masks": 2.5}, "n_masks must be a whole number"),
        ({"n_masks": 0}, "n_masks must be >= 1"),
        ({"p_keep": float("nan")}, "p_keep must be a finite number"),
        ({"baseline": 3}, "baseline must be a text"),
    ]:
        with pytest.raises(MethodError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            rise.checked_options(bad)
    with pytest.raises(MethodError, match="unknown option"):
        vx.get_method("mask_clip").checked_options({"anything": 1})  # the base class takes none
    with pytest.raises(MethodError, match="beta must be a finite number"):
        vx.get_method("m2ib").create(None, beta=float("inf"))  # create runs the same step first


def test_metric_options_known_keys_types_and_plug_ins():
    from vlexplain.eval.run_config import resolve_metric

    infos = {m: resolve_metric(m) for m in ("deletion_image", "pointing_game")}
    assert check_metrics_options(infos, {"deletion_image": {"n_steps": 4.0}}) == {"deletion_image": {"n_steps": 4}}
    for opts, msg in [
        ({"deletion_image": {"mode": "insertion"}}, "unknown option"),  # set by the metric itself
        ({"pointing_game": {"masks": 1}}, "unknown option"),  # ground truth comes from the data
        ({"pointing_game": {"tolerance": -1}}, "tolerance must be >= 0"),
        ({"deletion_image": {"substrate": "sand"}}, "substrate must be one of"),
        ({"auroc": {}}, "not among the metrics run"),
    ]:
        with pytest.raises(InputError, match=msg):
            check_metrics_options(infos, opts)
    plug = {"m": resolve_metric("tests.test_validate:plug_in_metric")}
    assert check_metrics_options(plug, {"m": {"scale": 2}}) == {"m": {"scale": 2}}
    with pytest.raises(InputError, match="scale must be a finite number"):
        check_metrics_options(plug, {"m": {"scale": float("inf")}})
    with pytest.raises(InputError, match="is not a metric function"):
        resolve_metric("os:getcwd")
    assert resolve_metric("tests.test_validate:masks_metric").requires == ("masks",)  # ground truth by keyword


def plug_in_metric(model, pixels, texts, image_maps, token_maps, scale: float = 1.0):
    return {}


def masks_metric(model, pixels, texts, image_maps, token_maps, *, masks):
    return {}


masks_metric.requires = ("masks",)  # type: ignore[attr-defined]


def test_json_options_inline_file_and_long():
    assert parse_json_option('{"m2ib": {"steps": 5}}', "--method-options") == {"m2ib": {"steps": 5}}
    assert parse_json_option('{"m2ib": {"steps": 5}}' + " " * 4000, "--x") == {"m2ib": {"steps": 5}}
    with pytest.raises(InputError, match="not valid JSON"):
        parse_json_option("{" + "x" * 5000, "--x")  # never taken for a (too long) file name
    with pytest.raises(InputError, match="no such JSON file"):
        parse_json_option("missing/opts.json", "--x")
    with pytest.raises(InputError, match="Infinity is not a number JSON allows"):
        parse_json_option('{"m2ib": {"beta": Infinity}}', "--x")


def test_seeds():
    assert check_seed(0) == 0 and check_seed(7.0) == 7 and check_seed(2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, 1.5, "3", True):
        with pytest.raises(InputError, match="--seed"):
            check_seed(bad)


# --- the explorer's bounds -------------------------------------------------------------------------------
def test_web_options_lower_expensive_options_and_cap_a_request():
    opts, notes = web_options(["rise", "m2ib"], {"rise": {"n_masks": 100_000_000}, "m2ib": {}}, 1)
    assert opts == {"rise": {"n_masks": 4000}, "m2ib": {}}
    assert notes == ["rise.n_masks lowered to 4000 (the explorer's limit)"]
    with pytest.raises(InputError, match=f"the explorer's limit is {MAX_REQUEST_COST:,}"):
        web_options(["rise"], {"rise": {"n_masks": 4000}}, 8)  # 8 texts x 2 sides x 4000 masks
    import vlexplain as vx

    every = vx.list_methods()  # every method with its defaults, on the most texts a request takes
    assert web_options(every, {}, 8)[1] == []
