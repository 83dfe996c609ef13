"""MkDocs hooks: tables generated from the code, so that the documentation cannot drift from it.

A page that contains one of these markers gets the generated table in its place:

* ``<!-- generated: methods -->``: every registered attribution method (sides, group, summary,
  paper, CPU cost per pair from ``benchmarks/methods_speed.json`` when it lists the method);
* ``<!-- generated: contrast -->``: how every registered method explains the ``contrast`` target
  (or why it refuses it);
* ``<!-- generated: metrics -->``: every registered metric (side, primary output, direction,
  ground truth it needs, summary);
* ``<!-- generated: families -->``: the supported model families (the README's table).
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cell(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _speeds() -> dict[str, dict]:
    path = ROOT / "benchmarks" / "methods_speed.json"
    try:
        return json.loads(path.read_text()).get("results", {})
    except (OSError, ValueError):
        return {}


def methods_table() -> str:
    import vlexplain as vx
    from vlexplain.models.family_table import method_group

    speeds = _speeds()
    head = "| method | group | sides | what it does | paper | CPU s / pair (batch 8) |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name in vx.list_methods():
        cls = vx.get_method(name)
        s = speeds.get(name, {}).get("batch_8", {}).get("cpu_seconds_per_pair")
        cost = f"{s:.2f}" if isinstance(s, (int, float)) else "-"
        paper = getattr(cls, "paper", "") or "-"
        lines.append(
            f"| `{name}` | {method_group(cls)} | {', '.join(cls.sides)} | {_cell(cls.summary)} | {_cell(paper)} | {cost} |"
        )
    return "\n".join(lines)


def contrast_table() -> str:
    import vlexplain as vx

    lines = ["| method | how it explains a difference of scores |", "|---|---|"]
    for name in vx.list_methods():
        cls = vx.get_method(name)
        form = cls.contrast_form or f"refused: {cls.no_contrast}"
        lines.append(f"| `{name}` | {_cell(form)} |")
    return "\n".join(lines)


def metrics_table() -> str:
    from vlexplain.metrics import get_spec, list_metrics

    lines = ["| metric | side | output | better | needs | what it measures |", "|---|---|---|---|---|---|"]
    for name in list_metrics():
        s = get_spec(name)
        needs = ", ".join(f"`{r}`" for r in s.requires) or "-"
        better = "higher" if s.higher_is_better else "lower"
        lines.append(f"| `{name}` | {s.side} | `{s.primary}` | {better} | {needs} | {_cell(s.summary)} |")
    return "\n".join(lines)


def families_table() -> str:
    from vlexplain.models.family_table import markdown_table

    return markdown_table()


GENERATORS = {
    "<!-- generated: methods -->": methods_table,
    "<!-- generated: contrast -->": contrast_table,
    "<!-- generated: metrics -->": metrics_table,
    "<!-- generated: families -->": families_table,
}


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, make in GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
