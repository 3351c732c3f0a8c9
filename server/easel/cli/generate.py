"""``easel generate`` and ``easel models``: client commands against a running server.

The request flags are generated from ``GenerateRequest``'s field declarations (name, type, range,
default, help); only the flags about files and the connection are written here.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..client.connection import DEFAULT_URL, Client, ClientError, JobCancelled, JobFailed, ProgressInfo, new_job_id
from ..client.fields import Declared
from ..client.protocol import GenerateRequest, Image, ProtocolError, request_fields
from ..server.security import TOKEN_ENV
from . import library
from .pictures import write_pictures
from .progress import ProgressBar

IMAGE_STRENGTH = 0.6  # the CLI's default strength for --image without --mask
_TYPES = {"int": int, "float": float, "str": str}
#: What the command line adds to a field's declared help.
CLI_NOTES = {
    "prompt": "required, except with --upscale (where it defaults to empty)",
    "strength": f"--image alone: {IMAGE_STRENGTH} by default; with --upscale the server's refine default",
    "loras": "NAME[:WEIGHT], weight 1.0 if left out; repeat for several",
    "control_model": "the guide is --control-image",
}


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate an image through a running server")
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"server token (default: ${TOKEN_ENV})")
    p.add_argument("--image", type=Path, help="input image (PNG) for image to image / inpaint")
    p.add_argument("--mask", type=Path, help="mask (PNG, white = regenerate) for inpaint")
    p.add_argument("--control-image", type=Path, metavar="PNG",
                   help="ControlNet guide (PNG, the size of --image or of the output)")
    add_request_flags(p)
    p.add_argument("--out", type=Path, required=True,
                   help="output PNG (a batch writes OUT-1.png, OUT-2.png …); with --image the whole picture, "
                        "the regenerated part laid over the input")
    p.add_argument("--layer", action="store_true",
                   help="write only the regenerated part (RGBA), its offset in the PNG text chunks easel.x/easel.y")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("models", help="list the models a server serves (--local: the models on this computer)")
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"server token (default: ${TOKEN_ENV})")
    library.add_local_arguments(p)
    p.set_defaults(func=cmd_models)


def add_request_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per declared request field that has one (``Spec.flag``); defaults stay the protocol's."""
    for d in request_fields().values():
        if d.flag is None:
            continue
        kw: dict[str, Any] = {"dest": d.name, "default": None, "help": flag_help(d)}
        if d.kind == "bool":
            kw["action"] = "store_true"
        elif d.kind == "list":
            kw.update(action="append", metavar=d.spec.metavar)
        else:
            kw.update(type=_TYPES[d.kind], metavar=d.spec.metavar)
        parser.add_argument(d.flag, **kw)


def flag_help(d: Declared) -> str:
    """The declared help without markdown, plus the allowed values, the default and CLI notes."""
    values = "; ".join(x for x in (d.range_text(), "" if d.required else "default " + d.default_text()) if x)
    text = "; ".join(x for x in (d.spec.help, CLI_NOTES.get(d.name, "")) if x) + (f" ({values})" if values else "")
    return re.sub(r"`([^`]*)`", r"\1", text).replace("%", "%%")


def request_from_args(args: argparse.Namespace, image: Image | None, mask: Image | None) -> GenerateRequest:
    """The request the flags describe; fields whose flag was not given keep the protocol's default."""
    values: dict[str, Any] = {}
    for name, d in request_fields().items():
        value = getattr(args, name, None) if d.flag else None
        if value is not None:
            values[name] = [d.spec.parse(v) for v in value] if d.spec.parse else value
    values.setdefault("prompt", "")
    if image is not None and mask is None and values.get("upscale") is None:
        values.setdefault("strength", IMAGE_STRENGTH)
    return GenerateRequest(job=new_job_id(), preview=False, **values)


def read_png(path: Path, flag: str) -> Image:
    try:
        return Image.png(path.read_bytes())
    except OSError as exc:
        raise ProtocolError(f"cannot read --{flag} {path}: {exc.strerror}", field=flag) from None
    except ProtocolError:
        raise ProtocolError(f"--{flag} {path} is not a PNG file; convert it to PNG", field=flag) from None


def cmd_generate(args: argparse.Namespace) -> int:
    if args.prompt is None and not args.upscale:
        print("easel generate: --prompt is required (only --upscale may leave it out)", file=sys.stderr)
        return 2
    try:
        image = read_png(args.image, "image") if args.image else None
        mask = read_png(args.mask, "mask") if args.mask else None
        control = read_png(args.control_image, "control-image") if args.control_image else None
        request = request_from_args(args, image, mask)
        GenerateRequest.from_message(request.to_message())
    except ProtocolError as exc:
        flag = request_fields()[exc.field].flag if exc.field in request_fields() else None
        print(f"easel generate: {exc}" + (f" ({flag})" if flag else ""), file=sys.stderr)
        return 2
    bar = ProgressBar("generating", quiet=args.quiet)

    def on_progress(p: ProgressInfo) -> None:
        bar.update(p.step, p.total, p.stage if not p.message else f"{p.stage}: {p.message}")

    try:
        with Client(args.url, image_format="png", client_name=f"easel-cli/{__version__}",
                    token=args.token) as client:
            result = client.generate(request, image, mask, on_progress=on_progress, control=control)
    except JobFailed as exc:
        bar.done()
        where = f" (field: {exc.field})" if exc.field else ""
        print(f"easel generate: {exc}{where}", file=sys.stderr)
        return 2
    except (ClientError, JobCancelled) as exc:
        bar.done()
        print(f"easel generate: {exc or 'cancelled'}", file=sys.stderr)
        return 1
    bar.done()
    canvas = image if request.upscale is None else None  # an upscale is a new, bigger picture
    for w in write_pictures(result, args.out, canvas, layer=args.layer):
        part, x, y = w.item.image, w.item.x, w.item.y
        whole = (part.width, part.height) == (w.width, w.height)
        print(f"{w.path}  seed {w.item.seed}  {w.width}x{w.height}  "
              + (f"at {x},{y}" if whole else f"(regenerated {part.width}x{part.height} at {x},{y})"))
    total = result.timings.get("total_s")
    if total is not None:
        print(f"done in {total:.2f} s on the server", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.local:
        return library.cmd_models_local(args)
    try:
        with Client(args.url, client_name=f"easel-cli/{__version__}", token=args.token) as client:
            welcome = client.welcome
            models = client.models()
    except ClientError as exc:
        print(f"easel models: {exc}", file=sys.stderr)
        return 1
    print(f"server {welcome.get('server')} on {welcome.get('device')} ({welcome.get('dtype')})")
    for m in models:
        default = " (default)" if m["id"] == welcome.get("default_model") else ""
        w, h = m["native"]
        if m.get("problem"):
            print(f"{m['id']}  cannot be used: {m['problem']}")
            continue
        print(f"{m['id']}{default}  family {m['family']}  native {w}x{h}  steps {m['default_steps']}  "
              f"guidance {m['default_guidance']}  {'loaded' if m.get('loaded') else 'not loaded'}")
    return 0
