"""``easel control-image KIND``: a control-layer guide made from a picture by a running server.

The same ``preprocess`` message the plugins' "From image" button sends (docs/protocol.md). Flags are
checked before connecting; every failure is one line on stderr and an exit code: 2 for a bad flag or
a kind the server cannot make, 1 for a connection or server failure, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..client.codes import PreprocessKind
from ..client.connection import DEFAULT_URL, Client, ClientError, JobFailed, ProgressInfo
from ..client.protocol import Image, ProtocolError
from ..server.security import TOKEN_ENV
from .generate import URL_HELP, read_png
from .pictures import OutputError, check_output, output_format
from .progress import ProgressBar

NAME = "easel control-image"


def add_parsers(sub: Any) -> None:
    kinds = ", ".join(f"{k.value} ({k.doc[0]})" for k in PreprocessKind)
    p = sub.add_parser("control-image", help="make a control layer's guide (edges, depth …) from a picture "
                                             "through a running server")
    p.add_argument("kind", metavar="KIND", help=f"the guide to make: {kinds}")
    p.add_argument("--image", type=Path, required=True, metavar="IN.png", help="the picture (PNG)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.png",
                   help="where to write the guide (.png, .jpg or .webp; PNG without a suffix)")
    p.add_argument("--url", default=DEFAULT_URL, help=URL_HELP)
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"server token (default: ${TOKEN_ENV})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_control_image)


def cmd_control_image(args: argparse.Namespace) -> int:
    try:
        image = read_png(args.image, "image")
        check_output(args.out, 1, False)
    except (ProtocolError, OutputError) as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 2
    bar = ProgressBar("preprocessing", quiet=args.quiet)

    def on_progress(p: ProgressInfo) -> None:
        bar.update(0, 0, p.message or p.stage)

    try:
        with Client(args.url, image_format="png", client_name=f"easel-cli/{__version__}", token=args.token) as c:
            guide = c.preprocess(args.kind, image, on_progress)
    except JobFailed as exc:
        bar.done()
        field = f" (field: {exc.field})" if exc.field else ""
        print(f"{NAME}: {exc}{field}", file=sys.stderr)
        return 2 if exc.field else 1
    except ClientError as exc:
        bar.done()
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.done()
        print(f"{NAME}: interrupted", file=sys.stderr)
        return 130
    bar.done()
    try:
        write_guide(guide, args.out)
    except OSError as exc:
        print(f"{NAME}: cannot write --out {args.out}: {exc.strerror or exc}; free some space or choose another "
              "--out path", file=sys.stderr)
        return 1
    print(f"{args.out}  {args.kind}  {guide.width}x{guide.height}")
    return 0


def write_guide(guide: Image, out: Path) -> None:
    """The guide as an RGB file in the format ``out``'s suffix names."""
    from PIL import Image as PILImage

    fmt = output_format(out)
    picture = PILImage.open(io.BytesIO(guide.data)) if guide.format != "rgba" else \
        PILImage.frombytes("RGBA", (guide.width, guide.height), guide.data)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.convert("RGB").save(out, fmt)
