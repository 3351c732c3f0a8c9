"""The documentation is finished text: no placeholder or to-do markers left in README.md or docs/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
MARKER = re.compile(r"PLACEHOLDER|\bTODO\b|\bFIXME\b|\bTBD\b")


def test_docs_are_found():
    assert ROOT / "README.md" in DOCS and len(DOCS) > 5


def test_no_placeholder_or_todo_markers():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in DOCS for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if MARKER.search(line)]
    assert not found, "unfinished text in the docs:\n" + "\n".join(found)
