"""Print the supported-families table generated from the code, or write it into README.md.

    python scripts/families_table.py           # print the Markdown block
    python scripts/families_table.py --write   # replace the block between the markers in README.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from vlexplain.models.family_table import (
    README_END,
    README_START,
    markdown_table,
    readme_block,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def main(argv: list[str]) -> int:
    table = markdown_table()
    if "--write" not in argv:
        print(table)
        return 0
    text = README.read_text()
    old = readme_block(text)
    if old is None:
        print(f"README.md has no {README_START!r} ... {README_END!r} markers", file=sys.stderr)
        return 2
    if old != table:
        README.write_text(text.replace(old, table))
        print("README.md: families table updated")
    else:
        print("README.md: families table already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
