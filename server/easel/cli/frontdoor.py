"""The websocket front door both ``easel serve`` and ``easel serve --ray`` run: the result store, then the
app until Ctrl+C, SIGTERM, the editor's end or the idle timeout."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any


def run_front_door(args: argparse.Namespace, make_app: Callable[[Any], Any], status: Any) -> int:
    """Keep results in ``--output-dir`` and serve ``make_app(store)`` until stopped; 1 if it cannot listen."""
    from ..server.lifetime import serve_until_stopped
    from ..server.results import ResultStore, default_output_dir

    try:
        store = ResultStore(args.output_dir or default_output_dir(), args.keep_results, args.keep_days * 86400)
        print(f"results are kept in {store.folder}", flush=True)
        asyncio.run(serve_until_stopped(make_app(store), args.host, args.port, status, parent_pid=args.parent_pid,
                                        idle_exit=args.idle_exit))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"easel serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
