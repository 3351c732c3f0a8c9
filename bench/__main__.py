"""Run the benchmarks: `python -m bench [--quick] [--only SECTION ...] [--json PATH] [--threads N]`."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

from .common import Row, machine

SECTIONS = ["transfer", "overhead", "previews", "memory", "selection", "concurrency", "scaling", "live", "hires", "library", "families", "gpu"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench.json"))
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown (docs/performance.md)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("EASEL_BENCH_THREADS", "1")),
                        help="torch threads (default 1: faster than 2 on a shared 2-core box, see "
                             "docs/performance.md)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["EASEL_BENCH_THREADS"] = str(args.threads)  # for the sections' child processes
    from .fixtures import quiet

    quiet()
    from .common import setup_threads

    setup_threads(args.threads)
    rows: list[Row] = []
    started = time.perf_counter()
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
        try:
            rows += module.run(quick=args.quick)
        except Exception as exc:  # one broken section must not lose the others' numbers
            traceback.print_exc()
            rows.append(Row(name, "section failed", None, "", ok=False, note=f"{type(exc).__name__}: {exc}"[:300]))
        print(f"[{name}] {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "quick": args.quick, "seconds": round(time.perf_counter() - started, 1),
                                     "rows": [_json_row(r) for r in rows]}, indent=1))
    print(f"\nwrote {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(rows))
        print(f"wrote {args.markdown}")
    return 1 if any(r.name == "section failed" for r in rows) else 0


def _json_row(row: Row) -> dict:
    d = row.to_dict()
    if isinstance(d["value"], float) and not math.isfinite(d["value"]):
        d["value"] = None  # JSON has no NaN
    return d


def print_table(rows: list[Row]) -> None:
    print(f"\nmachine: {machine()}")
    print(f"{'section':<12} {'measure':<62} {'value':>10} {'unit':<4} {'target':<8} ok")
    for r in rows:
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        value = "skipped" if r.value is None else f"{r.value:.3f}"
        print(f"{r.section:<12} {r.name:<62} {value:>10} {r.unit:<4} {r.target:<8} {ok:<3}  {r.note}")


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"


def markdown(rows: list[Row]) -> str:
    lines = ["| section | measure | value | target | ok | notes |", "|---|---|---:|---|---|---|"]
    for r in rows:
        ok = "" if r.ok is None else ("yes" if r.ok else "**no**")
        value = "skipped" if r.value is None else f"{_num(r.value)} {r.unit}".rstrip()
        target = r.target.replace("<=", "≤").replace(">=", "≥")
        lines.append(f"| {r.section} | {r.name} | {value} | {target} | {ok} | {r.note.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
