"""``easel generate`` and ``easel models``: client commands against a running server.

The request flags are generated from ``GenerateRequest``'s field declarations (name, type, range,
default, help); only the flags about files and the connection are written here. SIGINT (Ctrl-C) or
SIGTERM during a job sends the protocol's ``cancel``, so the server is free at once, and exits with
128 + the signal's number (130, 143) after one line (``run_cancellable``).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..client.connection import (
    DEFAULT_URL,
    Client,
    ClientError,
    JobCancelled,
    JobFailed,
    ProgressInfo,
    Result,
    new_job_id,
)
from ..client.fields import Declared, declared
from ..client.protocol import GenerateRequest, Image, ProtocolError, request_fields
from ..server.security import TOKEN_ENV
from . import library
from .pictures import OutputError, check_output, write_pictures
from .progress import ProgressBar

IMAGE_STRENGTH = 0.6  # the CLI's default strength for --image without --mask
URL_HELP = f"the Easel server's websocket address, ws://HOST:PORT (default: {DEFAULT_URL}, where `easel serve` listens)"
#: Signals that cancel a running ``easel generate``: it sends ``cancel`` and exits 128 + the signal's number.
CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CANCEL_WAIT_S = 10.0  #: how long a cancelled generate waits for the server's ``cancelled`` (a second signal: none)
#: Progress stage -> what the progress line says (``queued`` and ``load`` say their message).
STAGE_WORDS = {"denoise": "denoising", "upscale": "upscaling"}
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
    p.add_argument("--url", default=DEFAULT_URL, help=URL_HELP)
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"server token (default: ${TOKEN_ENV})")
    p.add_argument("--image", type=Path, help="input image (PNG) for image to image / inpaint")
    p.add_argument("--mask", type=Path, help="mask (PNG, white = regenerate) for inpaint")
    p.add_argument("--control-image", type=Path, metavar="PNG",
                   help="ControlNet guide (PNG, the size of --image or of the output)")
    add_request_flags(p)
    p.add_argument("--out", type=Path, required=True,
                   help="output file: .png (also without a suffix), .jpg/.jpeg or .webp (a batch writes OUT-1.png, "
                        "OUT-2.png …); with --image the whole picture, the regenerated part laid over the input")
    p.add_argument("--layer", action="store_true",
                   help="write only the regenerated part (RGBA PNG), its offset in the PNG text chunks "
                        "easel.x/easel.y and the oFFs chunk")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("models", help="list the models a server serves (--local: the models on this computer)")
    p.add_argument("--url", default=DEFAULT_URL, help=URL_HELP)
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
            kw.update(action="store" if d.spec.whole else "append", metavar=d.spec.metavar)
        else:
            kw.update(type=_TYPES[d.kind], metavar=d.spec.metavar)
        parser.add_argument(d.flag, **kw)
        for flag, metavar, text, _ in d.spec.also:  # another spelling of the same list's items
            parser.add_argument(flag, dest=f"{d.name}{flag}", action="append", default=None, metavar=metavar,
                                help=text.replace("%", "%%"))


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
            if d.spec.whole:
                values[name] = d.spec.parse(value) if d.spec.parse else value
            else:
                values[name] = [d.spec.parse(v) for v in value] if d.spec.parse else value
        for flag, _, _, parse in d.spec.also if d.flag else ():
            more = getattr(args, f"{name}{flag}", None)
            if more:
                values[name] = [*values.get(name, []), *(parse(v) for v in more)]
    values.setdefault("prompt", "")
    if image is not None and mask is None and values.get("upscale") is None:
        values.setdefault("strength", IMAGE_STRENGTH)
    return GenerateRequest(job=new_job_id(), preview=False, **values)


def attach_files(request: Any, known: dict[str, Declared] | None = None) -> dict[str, Image]:
    """The image files that a list flag's items name in their attachment fields (e.g. a control layer's
    guide), read (PNG) and renamed in ``request`` to ``FIELD.I.SUBFIELD``, the attachment names sent."""
    out: dict[str, Image] = {}
    for name, d in (known or request_fields()).items():
        if d.spec.items is None:
            continue
        subfields = [sub for sub, sd in declared(d.spec.items).items() if sd.spec.attachment]
        for i, item in enumerate(getattr(request, name) or []):
            for sub in subfields:
                path = item.get(sub) if isinstance(item, dict) else None
                if path:
                    key = f"{name}.{i}.{sub}"
                    out[key] = read_png(Path(path), (d.flag or name).lstrip("-"))
                    item[sub] = key
    return out


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
        attached = attach_files(request)
        GenerateRequest.from_message(request.to_message())
    except ProtocolError as exc:
        flag = request_fields()[exc.field].flag if exc.field in request_fields() else None
        print(f"easel generate: {exc}" + (f" ({flag})" if flag else ""), file=sys.stderr)
        return 2
    try:
        check_output(args.out, request.batch, args.layer)
    except OutputError as exc:
        print(f"easel generate: {exc}", file=sys.stderr)
        return 2
    bar = ProgressBar("generating", quiet=args.quiet)

    def on_progress(p: ProgressInfo) -> None:
        bar.update(p.step, *progress_text(p))

    def connect() -> Client:
        return Client(args.url, image_format="png", client_name=f"easel-cli/{__version__}", token=args.token)

    sent = {k: v for k, v in (("image", image), ("mask", mask), ("control", control)) if v is not None}
    run = run_cancellable(connect, request, {**sent, **attached}, on_progress)
    bar.done()
    if (code := report_failure(run)) is not None:
        return code
    result = run.result
    assert result is not None
    canvas = image if request.upscale is None else None  # an upscale is a new, bigger picture
    try:
        written = write_pictures(result, args.out, canvas, layer=args.layer, margins=tuple(request.expand or (0,) * 4))
    except OSError as exc:  # checked before the job; the disk may have filled up or changed since
        print(f"easel generate: cannot write --out {exc.filename or args.out}: {exc.strerror or exc}; free some "
              "space or choose another --out path, then run again", file=sys.stderr)
        return 1
    for w in written:
        part, x, y = w.item.image, w.item.x, w.item.y
        whole = (part.width, part.height) == (w.width, w.height)
        print(f"{w.path}  seed {w.item.seed}  {w.width}x{w.height}  "
              + (f"at {x},{y}" if whole else f"(regenerated {part.width}x{part.height} at {x},{y})"))
    for note in result.parameters.get("notes") or []:  # e.g. why a demo-model picture is an enlarged sketch
        print(f"note: {note}", file=sys.stderr)
    total = result.timings.get("total_s")
    if total is not None:
        print(f"done in {total:.2f} s on the server", file=sys.stderr)
    return 0


def report_failure(run: CancellableRun) -> int | None:
    """Print the one line for a run that brought no result; its exit code (None: it did)."""
    error = run.error
    if run.signal is not None:
        line, code = f"cancelled ({signal.Signals(run.signal).name}); {run.cancel_outcome()}", 128 + run.signal
    elif isinstance(error, JobFailed):
        line, code = f"{error}" + (f" (field: {error.field})" if error.field else ""), 2
    elif isinstance(error, JobCancelled):
        line, code = "the server cancelled the job", 1
    elif isinstance(error, ClientError):
        line, code = str(error), 1
    elif error is not None:
        raise error
    else:
        return None
    print(f"easel generate: {line}", file=sys.stderr)
    return code


def progress_text(p: ProgressInfo) -> tuple[int, str]:
    """(the total to count, 0 for none; what the progress line says) for a progress event."""
    if p.stage in ("queued", "load"):  # their messages are whole sentences, their counts meaningless
        return 0, p.message or p.stage
    words = STAGE_WORDS.get(p.stage, p.stage)
    return p.total, f"{words} ({p.message})" if p.message else words


@dataclass
class CancellableRun:
    """How ``run_cancellable`` ended: ``result`` or ``error``, and the ``signal`` that cancelled it."""

    result: Result | None = None
    error: BaseException | None = None
    signal: int | None = None
    signals: int = 0
    sent: bool = False  # the generate went out (so a cancel was sent too)

    def cancel_outcome(self) -> str:
        if not self.sent:
            return "nothing had been sent to the server"
        if isinstance(self.error, JobCancelled):
            return "the server stopped the job"
        if self.result is not None:
            return "the job had just finished; nothing written"
        if self.error is not None:
            return f"sent cancel to the server, then: {self.error}"
        if self.signals > 1:
            return "sent cancel to the server; stopped waiting for its answer"
        return f"sent cancel to the server, which did not confirm within {CANCEL_WAIT_S:g} s"


def run_cancellable(connect: Callable[[], Client], request: GenerateRequest,
                    images: dict[str, Image], on_progress: Callable[[ProgressInfo], None]) -> CancellableRun:
    """Send ``request`` and wait for its end on a worker thread. SIGINT or SIGTERM (``CANCEL_SIGNALS``,
    caught only on the main thread) sends the protocol's ``cancel`` for the job and waits up to
    ``CANCEL_WAIT_S`` for the server's ``cancelled`` (a second signal: not at all)."""
    run, lock = CancellableRun(), threading.Lock()
    clients: list[Client] = []

    def report(p: ProgressInfo) -> None:
        if run.signal is None:  # once cancelled, the one line saying so is the last word
            on_progress(p)

    def work() -> None:
        try:
            with connect() as client:
                with lock:  # a signal either comes before the generate is sent, or cancels it
                    if run.signal is not None:
                        return
                    client.submit(request, attachments=images)
                    run.sent = True
                    clients.append(client)
                run.result = client.wait_for(request.job, report)
        except BaseException as exc:  # handed to the main thread as is
            run.error = exc

    def on_signal(signum: int, _frame: object) -> None:
        run.signals += 1
        if run.signal is None:
            run.signal = signum

    worker = threading.Thread(target=work, name="easel-generate", daemon=True)
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in CANCEL_SIGNALS} if main else {}
    try:
        worker.start()
        deadline: float | None = None
        while worker.is_alive():
            worker.join(0.05)
            if run.signal is None:
                continue
            if deadline is None:
                if not lock.acquire(timeout=CANCEL_WAIT_S):
                    break
                lock.release()
                if not clients:
                    break
                try:
                    clients[0].cancel(request.job)
                except ClientError:
                    break
                deadline = time.monotonic() + CANCEL_WAIT_S
            elif run.signals > 1 or time.monotonic() > deadline:
                break
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return run


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
