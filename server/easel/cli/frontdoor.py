"""The websocket front door both ``easel serve`` and ``easel serve --ray`` run: the result store, then the
app until Ctrl+C, SIGTERM, the editor's end or the idle timeout."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
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


def check_listen(host: str, port: int) -> str | None:
    """Why ``easel serve`` could not listen on ``host:port`` (one line naming the fix), else None.

    Binds (and closes) a socket on each address of ``host`` as the server will, so that a port in use
    is said before the engine loads rather than after."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror}; check --host"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            if os.name == "posix":  # as asyncio does: a port left in TIME_WAIT may be reused
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (f"port {port} on {host} is already in use (another Easel server?): start this one "
                            "with --port N (another port, 0 for any free one) or stop the other server")
                if exc.errno == errno.EACCES:
                    return (f"cannot listen on {host}:{port}: permission denied (ports below 1024 need "
                            "privileges); use --port 1024 or above")
                return f"cannot listen on {host}:{port}: {exc.strerror}; check --host and --port"
    return None
