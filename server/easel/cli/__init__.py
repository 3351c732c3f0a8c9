"""The ``easel`` command: serve, generate, models, control-image, download, demo-model, install-plugin,
package-plugin.

One module per responsibility: ``serve`` (the server), ``generate`` (client commands; its flags are
generated from the protocol's field declarations), ``control_image`` (a guide made from a picture), ``pictures`` (the PNGs ``generate`` writes),
``plugins`` (editor plugins and the demo model), ``library`` (``download``, ``models --local``, the
config file of ``serve``). Heavy imports (torch, diffusers) happen only in
``serve`` and ``demo-model``, so client commands start fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from ..client.protocol import parse_lora
from . import control_image, generate, library, plugins, serve

__all__ = ["Parser", "build_parser", "main", "parse_lora"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


class Parser(argparse.ArgumentParser):
    """A bad flag is one line naming it and pointing at ``--help`` (no usage block); subcommands too."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="easel", description="Local AI painting server and client for Krita and GIMP.")
    parser.add_argument("--version", action="version", version=f"easel {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")
    serve.add_parser(sub)
    generate.add_parsers(sub)
    control_image.add_parsers(sub)
    library.add_parsers(sub)
    plugins.add_parsers(sub)
    return parser
