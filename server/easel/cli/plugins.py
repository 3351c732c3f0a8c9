"""``easel install-plugin``, ``package-plugin`` and ``demo-model``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .library import cannot_write


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("demo-model", help="the built-in demo model")
    p.add_argument("action", choices=["train"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options for the trainer (see `easel demo-model train -h`)")
    p.set_defaults(func=cmd_demo_model)

    for name, helptext in (("install-plugin", "install an editor plugin"), ("package-plugin", "write a plugin zip")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("editor", choices=["krita", "gimp"])
        if name == "install-plugin":
            p.add_argument("--dest", type=Path, help="plugin folder (default: the editor's user folder)")
            p.add_argument("--kritarc", type=Path, help="kritarc to enable the plugin in (Krita)")
            p.add_argument("--gimp-version", metavar="3.0|3.2|all",
                           help="GIMP: install for this version (default: every GIMP 3.x profile that exists, else 3.0)")
            p.add_argument("--serve-args", metavar='"ARGS"',
                           help="extra `easel serve` arguments for the server the plugin starts when none runs, "
                                'e.g. --serve-args "--models-dir ~/models" (one word: --serve-args=--no-preload)')
            p.set_defaults(func=cmd_install_plugin)
        else:
            p.add_argument("--out", type=Path, help="zip path (default: ./easel-EDITOR-plugin.zip)")
            p.set_defaults(func=cmd_package_plugin)


def cmd_demo_model(args: argparse.Namespace) -> int:
    from ..server.demo.train import main as train_main

    rest = [a for a in args.rest if a != "--"]
    return train_main(rest)


def cmd_install_plugin(args: argparse.Namespace) -> int:
    from ..plugin_install import install

    for flag, path in (("--dest", args.dest), ("--kritarc", args.kritarc and args.kritarc.parent)):
        problem = cannot_write(path) if path else None
        if problem:
            print(f"easel install-plugin: cannot write {flag} {path}: {problem}", file=sys.stderr)
            return 2
    try:
        report = install(args.editor, args.dest, args.kritarc, gimp_version=args.gimp_version,
                         serve_args=args.serve_args)
    except ValueError as exc:
        print(f"easel install-plugin: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"easel install-plugin: cannot write {exc.filename}: {exc.strerror}; check --dest and --kritarc",
              file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    if args.editor == "krita":
        print("restart Krita; the docker is under Settings > Dockers > Easel. Generate starts the server "
              "when none runs (see the docker's Server settings)")
    else:
        print("restart GIMP; the commands are under Filters > Easel. They start the server when none runs "
              "(see Local server in their dialogs)")
    return 0


def cmd_package_plugin(args: argparse.Namespace) -> int:
    from ..plugin_install import package_plugin

    folder = args.out.expanduser().absolute().parent if args.out else None
    problem = None if folder is None else cannot_write(folder) if folder.is_dir() else f"no folder {folder}"
    if problem:
        print(f"easel package-plugin: cannot write --out {args.out}: {problem}", file=sys.stderr)
        return 2
    try:
        print(f"wrote {package_plugin(args.editor, args.out)}")
    except OSError as exc:
        print(f"easel package-plugin: cannot write --out {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
