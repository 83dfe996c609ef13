"""The package layout: display (vlexplain.viz) depends on nothing in attribution, and attribution
reaches display only when an explanation is saved or rendered."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import vlexplain

SRC = Path(vlexplain.__file__).parent


def _imported_modules(path: Path, package: str, top_level_only: bool) -> list[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against ``package``)."""
    tree = ast.parse(path.read_text())
    if top_level_only:  # module-level statements, their if / try blocks included (TYPE_CHECKING, optional imports)
        tops = [t for t in tree.body if not isinstance(t, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        nodes = [n for t in tops for n in ast.walk(t)]
    else:
        nodes = list(ast.walk(tree))
    names = []
    for n in nodes:
        if isinstance(n, ast.Import):
            names += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = package.split(".")[: len(package.split(".")) - n.level + 1]
                mod = ".".join(base + ([n.module] if n.module else []))
            else:
                mod = n.module or ""
            names.append(mod)
            names += [f"{mod}.{a.name}" for a in n.names]
    return names


def test_viz_never_imports_attribution():
    offenders = {
        str(p.relative_to(SRC)): [
            m for m in _imported_modules(p, "vlexplain.viz", False) if m.startswith("vlexplain.attribution")
        ]
        for p in sorted((SRC / "viz").glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_attribution_imports_viz_only_inside_functions():
    files = sorted((SRC / "attribution").glob("*.py"))
    assert len(files) > 5
    offenders = {
        str(p.relative_to(SRC)): [
            m for m in _imported_modules(p, "vlexplain.attribution", True) if m.startswith("vlexplain.viz")
        ]
        for p in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    # the resolver sees a function-level import (the check above is not vacuous)
    inner = _imported_modules(SRC / "attribution" / "base.py", "vlexplain.attribution", False)
    assert "vlexplain.viz.save" in inner


def test_importing_the_api_does_not_load_viz_and_save_does(tmp_path):
    code = f"""
import json, sys
import torch
import vlexplain
from vlexplain.attribution.base import Explanation
before = sorted(m for m in sys.modules if m.startswith("vlexplain.viz"))
exp = Explanation(image_map=torch.rand(8, 8), patch_map=torch.rand(2, 2), token_scores=torch.rand(3),
                  tokens=["a", "red", "cat"], score=0.25, method="m2ib", settings={{}}, text="a red cat",
                  pixels=torch.rand(3, 8, 8))
paths = exp.save({str(tmp_path / "ex")!r})
html = exp.to_html()
after = sorted(m for m in sys.modules if m.startswith("vlexplain.viz"))
print(json.dumps([before, after, paths, "<img" in html]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after, paths, has_img = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == []
    assert "vlexplain.viz.save" in after
    assert sorted(Path(p).name for p in paths) == ["ex.json", "ex_overlay.png", "ex_text.html", "ex_text.png"]
    assert all(Path(p).stat().st_size > 0 for p in paths)
    assert has_img
