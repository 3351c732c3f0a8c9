"""The documentation is finished text: no placeholder or to-do markers left in README.md or docs/."""

from __future__ import annotations

import ast
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


def gimp_menu_labels() -> list[str]:
    """The GIMP plug-in's menu labels, read from its source (GIMP's modules do not import here)."""
    tree = ast.parse((ROOT / "plugin_gimp/easel_gimp/easel_gimp.py").read_text(encoding="utf-8"))
    commands = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in node.targets))
    assert isinstance(commands, ast.Dict)
    return [ast.literal_eval(call.args[0]).replace("_", "") for call in commands.values if isinstance(call, ast.Call)]


def test_readme_and_gimp_doc_name_every_gimp_command():
    labels = gimp_menu_labels()
    assert "Upscale…" in labels and len(labels) >= 5
    for doc in ("README.md", "docs/gimp.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert [label for label in labels if f"*{label}*" not in text and f"| {label} |" not in text] == [], doc
    words = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
    assert f"**Filters > Easel** has {words[len(labels)]} commands" in (ROOT / "docs/gimp.md").read_text()


def test_quick_start_is_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in block.splitlines()] == [["make", "serve"], ["make", "test"]]


def test_no_doc_installs_easel_from_a_package_index():
    """Easel is installed from its checkout or a wheel built from it: `pip install 'easel[…]'` finds nothing."""
    found = [str(path.relative_to(ROOT)) for path in DOCS if re.search(r"pip install '?easel\b", path.read_text())]
    assert not found


def test_the_first_make_serve_says_what_it_installs():
    """`make serve` on a fresh clone installs for minutes first: it says so and pip shows what it fetches."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    dry = subprocess.run(["make", "-n", "-B", "serve", "VENV=/nonexistent-venv"], cwd=root, capture_output=True,
                         text=True, timeout=60).stdout
    assert "first time takes a few minutes" in dry
    install = next(line for line in dry.splitlines() if "pip install" in line and "requirements.lock" in line)
    assert "--quiet" not in install and " -q" not in install
