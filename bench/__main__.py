"""Run the benchmarks: `python -m bench [--quick] [--only SECTION ...] [--json PATH]`."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from .common import Row, machine

SECTIONS = ["transfer", "overhead", "previews", "memory", "selection", "concurrency", "live", "gpu"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows: list[Row] = []
    for name in args.only or SECTIONS:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{name}":
                raise
            print(f"[{name}] not written yet", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        print(f"[{name}] running…", file=sys.stderr, flush=True)
        section_rows = module.run(quick=args.quick)
        rows += section_rows
        print(f"[{name}] {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "rows": [r.to_dict() for r in rows]}, indent=1))
    print(f"\nwrote {args.json}")
    return 0


def print_table(rows: list[Row]) -> None:
    print(f"\nmachine: {machine()}")
    print(f"{'section':<12} {'measure':<58} {'value':>10} {'unit':<6} {'target':<10} ok")
    for r in rows:
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        print(f"{r.section:<12} {r.name:<58} {r.value:>10.3f} {r.unit:<6} {r.target:<10} {ok}  {r.note}")


if __name__ == "__main__":
    sys.exit(main())
