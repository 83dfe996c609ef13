"""The development toolchain resolves the same everywhere, and the docstrings use the one
cross-reference style the docs build resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLE = re.compile(r":(func|class|meth|mod|attr|data|obj|exc):`")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints-dev.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints-dev.txt: {line!r} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_dev_tool_is_pinned_and_setup_uses_the_pins():
    pins = _pins()
    # the dev extra's list in pyproject.toml (tomllib is Python 3.11+; the project supports 3.10)
    block = re.search(r"^dev = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M)
    assert block, "pyproject.toml has no dev extra"
    dev = re.findall(r'"([^"]+)"', block.group(1))
    assert len(dev) > 5
    names = {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0]).lower() for d in dev}
    assert names - set(pins) == set(), "dev-extra tools without an exact pin in constraints-dev.txt"
    # the docs chain whose new releases broke the strict build is pinned too, not only what we name
    assert {"mkdocs-autorefs", "mkdocstrings-python", "griffelib", "pymdown-extensions"} <= set(pins)
    setup = (ROOT / "scripts" / "dev-setup.sh").read_text()
    assert "-c constraints-dev.txt" in setup
    assert "dev-setup.sh" in (ROOT / ".ci" / "run").read_text()


def test_docstrings_use_markdown_cross_references_not_sphinx_roles():
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in sorted((ROOT / "src").rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if ROLE.search(line)
    ]
    assert offenders == []
