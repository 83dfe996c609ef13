"""Print the supported-families and methods tables generated from the code, or write them into README.md.

python scripts/families_table.py           # print the Markdown blocks
python scripts/families_table.py --write   # replace the blocks between the markers in README.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from vlexplain.commands.family_table import (
    METHODS_END,
    METHODS_START,
    README_END,
    README_START,
    markdown_table,
    methods_markdown,
    readme_block,
)

README = Path(__file__).resolve().parent.parent / "README.md"


BLOCKS = (
    ("families", README_START, README_END, markdown_table),
    ("methods", METHODS_START, METHODS_END, methods_markdown),
)


def main(argv: list[str]) -> int:
    if "--write" not in argv:
        print("\n\n".join(make() for _, _, _, make in BLOCKS))
        return 0
    text = README.read_text()
    for what, start, end, make in BLOCKS:
        old, table = readme_block(text, start, end), make()
        if old is None:
            print(f"README.md has no {start!r} ... {end!r} markers", file=sys.stderr)
            return 2
        if old != table:
            text = text.replace(old, table)
            print(f"README.md: {what} table updated")
        else:
            print(f"README.md: {what} table already up to date")
    README.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
