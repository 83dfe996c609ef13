"""MkDocs hooks: tables generated from the code, so that the documentation cannot drift from it.

A page that contains one of these markers gets the generated table in its place:

* ``<!-- generated: methods -->``: every registered attribution method (sides, group, summary,
  paper, CPU cost per pair from ``benchmarks/methods_speed.json`` when it lists the method), then
  the Captum bridge's ``captum:<Algorithm>`` methods;
* ``<!-- generated: metrics -->``: every registered metric (side, primary output, direction,
  ground truth it needs, summary), then the Quantus bridge's ``quantus:<Metric>`` metrics;
* ``<!-- generated: families -->``: the supported model families (the README's table);
* ``<!-- generated: captum -->``: the Captum algorithms of the bridge (``captum:<Algorithm>``),
  what each needs and the ones refused with the reason;
* ``<!-- generated: quantus -->``: the Quantus metrics of the bridge (``quantus:<Metric>``), what
  each requires, and the ones refused with the reason;
* ``<!-- generated: benchmarks -->``: every registered benchmark kind (``vlexplain benchmark KIND``);
* ``<!-- generated: interaction-methods -->``: every registered interaction method.
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
    from vlexplain.commands.family_table import method_group

    speeds = _speeds()
    head = "| method | group | sides | what it does | paper | CPU s / pair (batch 8) |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name in vx.list_methods(bridged=True):
        cls = vx.get_method(name)
        s = speeds.get(name, {}).get("batch_8", {}).get("cpu_seconds_per_pair")
        cost = f"{s:.2f}" if isinstance(s, (int, float)) else "-"
        paper = getattr(cls, "paper", "") or "-"
        lines.append(
            f"| `{name}` | {method_group(cls)} | {', '.join(cls.sides)} | {_cell(cls.summary)} | {_cell(paper)} | {cost} |"
        )
    return "\n".join(lines)


def metrics_table() -> str:
    from vlexplain.metrics import get_spec, list_metrics

    lines = ["| metric | side | output | better | needs | what it measures |", "|---|---|---|---|---|---|"]
    for name in list_metrics(bridged=True):
        s = get_spec(name)
        needs = ", ".join(f"`{r}`" for r in s.requires) or "-"
        better = "higher" if s.higher_is_better else "lower"
        lines.append(f"| `{name}` | {s.side} | `{s.primary}` | {better} | {needs} | {_cell(s.summary)} |")
    return "\n".join(lines)


def families_table() -> str:
    from vlexplain.commands.family_table import markdown_table

    return markdown_table()


def benchmarks_table() -> str:
    from vlexplain.eval.benchmarks.registry import get_benchmark, list_benchmarks

    lines = ["| kind | pairs and ground truth | defaults | metrics (leaderboard sorted by the **bold** one) |"]
    lines.append("|---|---|---|---|")
    for name in list_benchmarks():
        b = get_benchmark(name)
        n = "all pairs" if b.default_n is None else f"{b.default_n} {b.n_help or 'pairs'}"
        opts = ", ".join(f"`--{o.name.replace('_', '-')}`" for o in b.options)
        mets = ", ".join(f"**{m}**" if m == b.primary else m for m in b.default_metrics)
        what = _cell(b.summary) + (f"; own options: {opts}" if opts else "")
        lines.append(f"| `{name}` | {what} | `{b.default_model}`, {n} | {mets} |")
    return "\n".join(lines)


def interaction_methods_table() -> str:
    import vlexplain as vx

    lines = ["| method | kind | needs | what it does | paper |", "|---|---|---|---|---|"]
    for name in vx.list_interaction_methods():
        cls = vx.get_interaction_method(name)
        kind = "reference" if cls.reference else "interaction"
        needs = "gradients" if cls.needs_gradients else "forward passes" if cls.uses_model else "-"
        lines.append(f"| `{name}` | {kind} | {needs} | {_cell(cls.summary)} | {_cell(cls.paper or '-')} |")
    return "\n".join(lines)


def captum_table() -> str:
    from vlexplain.attribution.captum_bridge import bridge_options
    from vlexplain.attribution.captum_catalog import ALGORITHMS, REFUSED

    lines = ["| method | kind | sides | what it does | bridge options |", "|---|---|---|---|---|"]
    for name, a in sorted(ALGORITHMS.items()):
        own = [k for k in ("layer", "baseline", "grid", "reduce", "smooth") if k in bridge_options(a)]
        kind = a.kind + (" (block output)" if a.layer else "")
        opts = ", ".join(f"`{k}`" for k in own) or "-"
        lines.append(f"| `captum:{name}` | {kind} | {', '.join(a.sides)} | {_cell(a.summary)} | {opts} |")
    lines += ["", "Refused, with the reason given:", ""]
    lines += [f"- `captum:{n}`: {_cell(r)}" for n, r in sorted(REFUSED.items())]
    lines.append("- `captum:Neuron*`: explains one unit of a layer (a `neuron_selector`), not the image-text score")
    return "\n".join(lines)


def quantus_table() -> str:
    from vlexplain.metrics import get_spec, list_metrics
    from vlexplain.metrics.quantus_bridge import DEFAULTS, REFUSED

    lines = ["| metric | group | better | needs | budget set by the bridge |", "|---|---|---|---|---|"]
    for name in [n for n in list_metrics(bridged=True) if n.startswith("quantus:")]:
        s = get_spec(name)
        group = s.summary.rsplit("(", 1)[1].rstrip(")")
        needs = ", ".join(f"`{r}`" for r in s.requires) or "-"
        d = DEFAULTS.get(name.split(":", 1)[1], {})
        budget = ", ".join(f"`{k}`" for k in d) or "-"
        better = "higher" if s.higher_is_better else "lower"
        lines.append(f"| `{name}` | {group} | {better} | {needs} | {budget} |")
    lines += ["", "Refused, with the reason given:", ""]
    lines += [f"- `quantus:{n}`: {_cell(r)}" for n, r in sorted(REFUSED.items())]
    return "\n".join(lines)


GENERATORS = {
    "<!-- generated: methods -->": methods_table,
    "<!-- generated: metrics -->": metrics_table,
    "<!-- generated: families -->": families_table,
    "<!-- generated: benchmarks -->": benchmarks_table,
    "<!-- generated: interaction-methods -->": interaction_methods_table,
    "<!-- generated: captum -->": captum_table,
    "<!-- generated: quantus -->": quantus_table,
}


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, make in GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
