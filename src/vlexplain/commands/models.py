"""``vlexplain models`` (the supported families and specs) and ``vlexplain methods``."""

from __future__ import annotations

from typing import Any

import typer


def default_layers(model: Any) -> list[tuple[str, str, str]]:
    """(method, image layer, text layer) for every registered method with layer options, as the
    method resolves its defaults on ``model``."""
    import vlexplain as vx

    from ..errors import VlexplainError

    out = []
    for name in vx.list_methods():
        cls = vx.get_method(name)
        try:
            inst = cls.create(model)
        except VlexplainError:  # a method that does not build on this model states why in the table
            continue
        cells = []
        for side in ("image", "text"):
            layer = getattr(inst, f"{side}_layer", None)
            tower = model.tower(side)
            if not isinstance(layer, int) or cls.why_not(model, side) is not None:
                cells.append("-")
            elif layer < 0:
                cells.append(f"{layer} (the input of block 0) of {tower.num_blocks}")
            else:
                cells.append(f"{layer} (output of block {layer + 1} of {tower.num_blocks})")
        if cells != ["-", "-"]:
            out.append((name, cells[0], cells[1]))
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def models() -> None:
        """The supported model families, the method groups for each side, and the accepted specs."""
        from rich.console import Console
        from rich.table import Table

        from ..models.registry import SPEC_FORMS, registered_loaders
        from .family_table import GROUPS, family_rows, method_groups

        con = Console()
        lines = ["supported model families (image side / text side: the method groups that apply)", ""]
        for r in family_rows():
            lines += [
                f"{r['family']}  [{r['library']}]",
                f"    examples:   {r['examples']}",
                f"    image side: {r['image side']}",
                f"    text side:  {r['text side']}",
            ]
            lines += [f"    notes:      {r['notes']}"] if r["notes"] else []
        groups = method_groups()
        lines += ["", "method groups:"] + [f"    {g}: {', '.join(groups[g]) or '-'}" for g in GROUPS] + [""]
        typer.echo("\n".join(lines))
        con.print(SPEC_FORMS, markup=False, highlight=False)
        b = Table(title="built-in models")
        b.add_column("spec")
        b.add_column("available here")
        b.add_column("description")
        for e in registered_loaders():
            b.add_row(
                e.prefix.rstrip(":") + ("shapes" if e.prefix.endswith(":") else ""),
                "yes" if e.available() else "no (install extra)",
                e.description,
            )
        con.print(b)

    @app.command()
    def methods(
        model: str | None = typer.Option(
            None, "--model", "-m", help="Show which methods apply to this model and their default layers."
        ),
    ) -> None:
        """Registered attribution and interaction methods (with --model: which apply, why not, default layers)."""
        from rich.console import Console
        from rich.table import Table

        import vlexplain as vx

        from ..attribution.base import brief_reason
        from .explain import load_model_cli
        from .family_table import method_group

        m = load_model_cli(model, None) if model else None
        t = Table(title="attribution methods" + (f" for {model}" if model else ""))
        for c in ("method", "group", "image", "text", "description"):
            t.add_column(c, overflow="fold")
        for name in vx.list_methods(bridged=True):
            cls = vx.get_method(name)
            if m is None:
                sides = [s if s in cls.sides else "-" for s in ("image", "text")]
            else:
                sides = []
                for s in ("image", "text"):
                    why = cls.why_not(m, s)
                    sides.append("yes" if why is None else f"no: {brief_reason(why)}")
            t.add_row(name, method_group(cls), sides[0], sides[1], cls.summary)
        con = Console()
        con.print(t)
        if not any(n.startswith("captum:") for n in vx.list_methods(bridged=True)):
            con.print(
                "captum:<Algorithm> (Captum's attribution algorithms): install them with pip install 'vlexplain[captum]'",
                markup=False,
                highlight=False,
            )
        from ._interactions import print_interaction_methods

        print_interaction_methods(con, m)
        if m is not None:
            con.print(
                f"image tower: {m.image.kind}, {m.image.num_blocks} blocks; text tower: {m.text.num_blocks} blocks",
                markup=False,
                highlight=False,
            )
            d = Table(title=f"default layers for {model} (0-based; set with layer= / image_layer= / text_layer=)")
            for c in ("method", "image layer", "text layer"):
                d.add_column(c)
            for row in default_layers(m):
                d.add_row(*row)
            con.print(d)
