"""The families table: README's copy equals the generated one, its method groups match what the
methods themselves accept on each family's model, and the CLI prints it and the default layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vlexplain as vx
from vlexplain.cli import main
from vlexplain.commands.family_table import (
    GROUPS,
    METHODS_END,
    METHODS_START,
    groups_for,
    markdown_table,
    method_groups,
    methods_markdown,
    readme_block,
)
from vlexplain.errors import MethodError
from vlexplain.models.families import families

README = Path(__file__).resolve().parents[2] / "README.md"
HF_KEYS = [f.key for f in families() if f.library == "transformers"]


def test_readme_table_is_the_generated_one():
    block = readme_block(README.read_text())
    assert block is not None, "README.md lost the families table markers"
    assert block == markdown_table(), "README.md's families table differs: run python scripts/families_table.py --write"


def test_readme_methods_table_is_the_generated_one():
    block = readme_block(README.read_text(), METHODS_START, METHODS_END)
    assert block is not None, "README.md lost the methods table markers"
    assert block == methods_markdown(), (
        "README.md's methods table differs: run python scripts/families_table.py --write"
    )
    assert all(f"`{n}`" in block for n in vx.list_methods())


def test_every_method_is_in_one_group():
    groups = method_groups()
    names = [n for g in GROUPS for n in groups[g]]
    assert sorted(names) == sorted(vx.list_methods())
    assert "m2ib" in groups["M2IB"] and "chefer" in groups["attention"] and "rise" in groups["gradient-free"]


@pytest.mark.parametrize("key", HF_KEYS)
def test_groups_match_the_methods_on_the_model(key, family_model):
    """A group is listed for a side exactly when at least one of its methods accepts that side."""
    fam = next(f for f in families() if f.key == key)
    m = family_model(key)
    groups = method_groups()
    for side in ("image", "text"):
        applies = [g for g in GROUPS if any(vx.get_method(n).why_not(m, side) is None for n in groups[g])]
        assert applies == groups_for(fam, side), f"{key} {side}"


def test_cnn_image_tower_refuses_attention_methods_naming_the_others(family_model):
    m = family_model("hf-align")
    x = torch.zeros(3, *m.input_size)
    with pytest.raises(MethodError) as e:
        vx.explain(m, x, "a cat", method="chefer", sides=["image"])
    msg = str(e.value)
    assert "\n" not in msg and "gradcam" in msg and "m2ib" in msg and "chefer" in msg
    e2 = vx.explain(m, x, "a cat", method="chefer", sides=["text"])  # the BERT side has attention
    assert torch.isfinite(e2.token_scores).all() and e2.image_map is None


def test_models_command_prints_every_family(capsys):
    assert main(["models"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for f in families():
        assert f.library in out
    for word in (
        "Siglip2Model",
        "AlignModel",
        "AltCLIPModel",
        "ChineseCLIPModel",
        "BlipForImageTextRetrieval",
        "gradient-free",
        "hf:ORG/NAME",
    ):
        assert word in out.replace("│ ", "").replace(" │", ""), word


def test_methods_command_states_default_layers(tmp_path, capsys):
    from vlexplain.models.hf_align import tiny_align

    tiny_align().save_pretrained(tmp_path)
    assert main(["methods", "--model", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.startswith("│") and "output of block" in ln}
    n = tiny_align().vision_model.config.num_block_repeats
    assert "3 (output of block 4 of 4)" in rows["gradcam"], rows  # CNN: the last block
    assert "2 (output of block 3 of 4)" in rows["m2ib"]  # round(10 * 4 / 12) - 1
    assert "image tower: cnn" in out and n is not None


@pytest.mark.parametrize("key", [f.key for f in families()])
def test_tiny_builders_are_seeded_and_finite(key):
    """Two builds of a family's tiny model hold the same finite weights: a parameter a library leaves
    as ``torch.empty`` (CoCa's decoder projection) would otherwise make the contract tests' "no parameter
    changed" check depend on whatever memory it was given."""
    fam = next(f for f in families() if f.key == key)

    def state(m):
        m = getattr(m, "model", m)
        return {k: v for k, v in m.state_dict().items() if v.is_floating_point()}

    a, b = state(fam.tiny()), state(fam.tiny())
    assert a.keys() == b.keys()
    bad = [k for k, v in a.items() if not torch.isfinite(v).all()]
    assert not bad, f"non-finite values in {bad[:5]}"
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"two builds differ in {differ[:5]}"
