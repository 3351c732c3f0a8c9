"""Print which installed versions differ from requirements.lock (used by `make test-latest`).

Usage: python .ci/lock_diff.py requirements.lock [more.lock …]   (run with the venv's python whose packages to compare)
"""

from __future__ import annotations

import re
import sys
from importlib import metadata


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str) -> dict[str, str]:
    """Return {normalised name: version} from a pip-compile lock file."""
    pins: dict[str, str] = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def main(argv: list[str]) -> int:
    lock: dict[str, str] = {}
    for path in argv[1:] or ["requirements.lock"]:
        lock.update(read_lock(path))
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    rows = []
    for name in sorted(set(lock) | set(installed)):
        if name in {"easel", "pip"}:
            continue
        old, new = lock.get(name, "-"), installed.get(name, "-")
        if old != new:
            rows.append((name, old, new))
    if not rows:
        print("newest releases: every version equals requirements.lock")
        return 0
    width = max(len(r[0]) for r in rows)
    print(f"newest releases differ from requirements.lock in {len(rows)} packages:")
    print(f"  {'package':<{width}}  {'lock':<14} newest")
    for name, old, new in rows:
        print(f"  {name:<{width}}  {old:<14} {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
