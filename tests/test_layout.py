"""The package layout: no import circle; models/ below everything that explains or tests models;
data/ (readers of users' data) below testbeds/ (the synthetic worlds); one name per thing; display
(vlexplain.viz) depends on nothing in attribution, and attribution reaches display only when an
explanation is saved or rendered; test files stay short."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import vlexplain

SRC = Path(vlexplain.__file__).parent
ROOT = Path(__file__).resolve().parent.parent


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


# --- the import graph ---------------------------------------------------------------------------
def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) of every module under src/vlexplain."""
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _import_graph() -> dict[str, set[str]]:
    """Module -> the modules of src it imports, at module level or inside functions alike.

    Importing ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` too, so an import counts as an
    edge to the module and to every package on its path, except the importer's own packages (those
    are initialised before the importer runs, whatever it imports).
    """
    mods = _modules()
    graph = {}
    for name, (path, is_pkg) in mods.items():
        pkg = name if is_pkg else name.rpartition(".")[0]
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges = set()
        for target in _imported_modules(path, pkg, False):
            while target and target not in mods:  # `from pkg.mod import name` -> pkg.mod
                target = target.rpartition(".")[0]
            parts = target.split(".") if target else []
            edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} - own
        graph[name] = {e for e in edges if e in mods}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_in_src():
    graph = _import_graph()
    assert len(graph) > 100 and "vlexplain.testbeds.shapes" in graph["vlexplain.testbeds.shapes_cue"]
    assert _circles(graph) == []


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _circles(graph) == [["a", "b", "c"]]
    # a function-level import counts: attribution.base imports viz.save inside a function
    assert "vlexplain.viz.save" in _import_graph()["vlexplain.attribution.base"]


def _edges_into(package: str) -> dict[str, list[str]]:
    return {m: sorted(v) for m, v in _import_graph().items() if m.startswith(package + ".")}


def test_models_import_nothing_above_them():
    above = ("vlexplain.data", "vlexplain.testbeds", "vlexplain.attribution")
    offenders = {
        m: [t for t in targets if t == "vlexplain" or t.startswith(above)]
        for m, targets in _edges_into("vlexplain.models").items()
    }
    assert {m: v for m, v in offenders.items() if v} == {}
    # nor by name (importlib): the model layer names only its own modules
    named = {
        str(p.relative_to(SRC)): found
        for p in sorted((SRC / "models").glob("*.py"))
        if (
            found := [
                s
                for s in re.findall(r"[\"'](vlexplain\.[\w.]+)[\"']", p.read_text())
                if not s.startswith("vlexplain.models.")
            ]
        )
    }
    assert named == {}


def test_data_never_imports_the_testbeds():
    offenders = {
        m: [t for t in v if t.startswith("vlexplain.testbeds")] for m, v in _edges_into("vlexplain.data").items()
    }
    assert {m: v for m, v in offenders.items() if v} == {}
    # the synthetic worlds live in testbeds/ alone
    worlds = {p.stem for p in (SRC / "testbeds").glob("*.py")} - {"__init__"}
    assert {"shapes", "spurious", "grids", "shapes_train", "testbed_models"} <= worlds
    assert worlds.isdisjoint(p.stem for p in (SRC / "data").glob("*.py"))
    # testbeds may use data and models, never the reverse (checked above and in the circle test)
    assert _edges_into("vlexplain.testbeds")


# --- one name per thing -------------------------------------------------------------------------
def _top_level_names(path: Path) -> tuple[set[str], set[str]]:
    """(names a module defines at top level, its ``__all__``)."""
    tree = ast.parse(path.read_text())
    defined: set[str] = set()
    public: set[str] = set()
    for node in tree.body:
        for n in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(n.name)
            elif isinstance(n, (ast.Assign, ast.AnnAssign)):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                defined |= {e.id for t in targets for e in ast.walk(t) if isinstance(e, ast.Name)}
                if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                    public = {e.value for e in n.value.elts}  # type: ignore[attr-defined]
    return defined, public


def test_names_are_imported_from_the_module_that_defines_them():
    """``from vlexplain.X import name`` (in src, tests, scripts, benchmarks) takes a name X defines,
    a submodule of X, or a name of a package's public API (its ``__all__``): no module keeps another
    module's names alive under a second path."""
    mods = _modules()
    files = [p for d in ("src", "tests", "scripts", "benchmarks") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 150
    bad = []
    for path in files:
        in_src = path.is_relative_to(SRC)
        pkg = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1]) if in_src else ""
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or (node.level and not in_src):
                continue
            if node.level:
                base = pkg.split(".")[: pkg.count(".") + 2 - node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod not in mods:
                assert not mod.startswith("vlexplain"), f"{path}: no module {mod}"
                continue
            defined, public = _top_level_names(mods[mod][0])
            for a in node.names:
                if a.name not in defined | public and f"{mod}.{a.name}" not in mods:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {mod}.{a.name}")
    assert bad == []


def test_no_module_keeps_unused_imports_alive():
    """A module-level relative import that ruff would call unused (silenced with ``noqa: F401``)
    re-exports a name (inside a function such an import only probes that a module imports)."""
    offenders = [
        f"{p.relative_to(SRC)}:{i}"
        for p in sorted(SRC.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.match(r"from \.", line) and "F401" in line
    ]
    assert offenders == []


# --- tests a newcomer can find ------------------------------------------------------------------
def test_tests_are_short():
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / "tests").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 650
    }
    assert long == {}


def test_tests_mirror_the_packages():
    """tests/PACKAGE/ holds the tests of src/vlexplain/PACKAGE/ (tests/cli/: commands/ and cli.py);
    tests of the package root's own modules sit in tests/; tests/support/ holds helpers, not tests."""
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders - {"support"} == (packages - {"commands"}) | {"cli"}
    assert not list((ROOT / "tests" / "support").glob("test_*.py"))
