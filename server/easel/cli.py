"""The ``easel`` command: serve, generate, models, demo-model, install-plugin, package-plugin.

Heavy imports (torch, diffusers) happen only in ``serve`` and ``demo-model``, so client
commands start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .client.connection import DEFAULT_URL, Client, ClientError, JobCancelled, JobFailed, ProgressInfo, new_job_id
from .client.protocol import GenerateRequest, Image, ProtocolError
from .server.security import TOKEN_ENV, Security, SecurityError

DEMO_MODEL = "easel-demo"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easel", description="Local AI painting server and client for Krita and GIMP.")
    parser.add_argument("--version", action="version", version=f"easel {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("serve", help="start the websocket server")
    p.add_argument("--model", action="append", metavar="M",
                   help="hub id, diffusers folder or .safetensors/.ckpt file (repeat to serve several; "
                        f"the first is the default). Default: the built-in toy model {DEMO_MODEL!r}")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--max-loaded", type=int, default=2, metavar="N", help="models kept in memory (LRU)")
    p.add_argument("--attention-slicing", action="store_true", help="lower memory, slower")
    p.add_argument("--vae-tiling", action="store_true", help="decode big images in tiles")
    p.add_argument("--cpu-offload", action="store_true", help="model CPU offload (needs CUDA)")
    p.add_argument("--models-dir", type=Path, help="folder that local model paths are confined to")
    p.add_argument("--no-preload", action="store_true", help="load the default model on first use")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for inference (default: torch's choice, one per core; on a busy "
                        "2-core machine 1 was measured 3-6x faster, docs/performance.md)")
    p.add_argument("--output-dir", type=Path, help="where finished results are kept (default: user data dir)")
    p.add_argument("--keep-results", type=int, default=200, metavar="N", help="results kept until acknowledged")
    p.add_argument("--keep-days", type=float, default=7.0, help="results older than this are deleted")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"require this token from clients (default: ${TOKEN_ENV}); needed off loopback")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let browser pages from ORIGIN connect (none by default)")
    p.add_argument("--loras-dir", type=Path, metavar="DIR", help="folder of .safetensors LoRAs offered to clients")
    p.add_argument("--control-model", action="append", default=[], metavar="REF",
                   help="ControlNet (hub id or folder) offered to clients; repeat for several")
    p.add_argument("--refiner", metavar="REF", help="SDXL refiner model (hub id, folder or file) for refiner jobs")
    p.add_argument("--safety-checker", nargs="?", const=True, default=False, metavar="REF",
                   help="check results with the SD safety checker (off by default; REF: a folder or hub id, "
                        "default CompVis/stable-diffusion-safety-checker); flagged images come back black")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("generate", help="generate an image through a running server")
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"server token (default: ${TOKEN_ENV})")
    p.add_argument("--prompt", help="required, except with --upscale (where it defaults to empty)")
    p.add_argument("--negative", default="")
    p.add_argument("--model")
    p.add_argument("--image", type=Path, help="input image (PNG) for image to image / inpaint")
    p.add_argument("--mask", type=Path, help="mask (PNG, white = regenerate) for inpaint")
    p.add_argument("--strength", type=float, default=None,
                   help="0..1 (default 1.0, or 0.6 with --image; with --upscale the server's refine default 0.35)")
    p.add_argument("--upscale", type=int, choices=[2, 4],
                   help="tiled upscale of --image by 2 or 4, refined at --strength (docs/features.md)")
    p.add_argument("--lora", action="append", default=[], metavar="NAME[:WEIGHT]",
                   help="apply a LoRA from the server's list (weight default 1.0); repeat for several")
    p.add_argument("--control-image", type=Path, metavar="PNG",
                   help="ControlNet guide (PNG, the size of --image or of the output)")
    p.add_argument("--control-model", metavar="ID", help="ControlNet id from the server's list")
    p.add_argument("--control-strength", type=float, default=1.0, metavar="F", help="0..2 (default 1.0)")
    p.add_argument("--variation-seed", type=int, metavar="N", help="blend this seed's noise into --seed's")
    p.add_argument("--variation-strength", type=float, default=0.0, metavar="F",
                   help="0..1: 0 = only --seed, 1 = only --variation-seed")
    p.add_argument("--refiner", action="store_true", help="SDXL: let the server's refiner do the last steps")
    p.add_argument("--refiner-switch", type=float, default=0.8, metavar="F",
                   help="fraction of denoising done by the base model (default 0.8)")
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--scheduler")
    p.add_argument("--out", type=Path, required=True, help="output PNG (a batch writes OUT-1.png, OUT-2.png …)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("models", help="list the models a server serves")
    p.add_argument("--url", default=DEFAULT_URL)
    p.set_defaults(func=cmd_models)

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
            p.set_defaults(func=cmd_install_plugin)
        else:
            p.add_argument("--out", type=Path, help="zip path (default: ./easel-EDITOR-plugin.zip)")
            p.set_defaults(func=cmd_package_plugin)
    return parser


# -- serve ------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    models = args.model or [DEMO_MODEL]
    security = Security(token=args.token, allowed_origins=args.allow_origin)
    try:
        security.check_bind(args.host)
    except SecurityError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    print(f"Easel {__version__}: loading the engine (torch, diffusers)…", flush=True)
    from .server.app import App
    from .server.engine import Engine
    from .server.engine.types import EngineError, Progress
    from .server.results import ResultStore, default_output_dir

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    try:
        engine = Engine(models, device=args.device, dtype=args.dtype, max_loaded=args.max_loaded,
                        attention_slicing=args.attention_slicing, vae_tiling=args.vae_tiling,
                        cpu_offload=args.cpu_offload, models_dir=args.models_dir, loras_dir=args.loras_dir,
                        control_models=args.control_model, refiner=args.refiner,
                        safety_checker=args.safety_checker)
    except EngineError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    if models[0] == DEMO_MODEL:
        from .server.demo.model import TOY_NOTICE

        print(TOY_NOTICE, flush=True)
    if not args.no_preload:
        bar = ProgressBar("loading")

        def on_load(p: Progress) -> None:
            bar.update(p.step, p.total, p.message or p.stage)

        try:
            engine.load(None, on_load)
        except EngineError as exc:
            bar.done()
            print(f"easel serve: {exc}", file=sys.stderr)
            return 2
        bar.done()
    print(f"device {engine.device}, dtype {engine.dtype}; models: "
          + ", ".join(m.id for m in engine.models()), flush=True)
    extras = [f"{len(engine.loras())} LoRAs" if args.loras_dir else "",
              "control models: " + ", ".join(engine.control_models()) if args.control_model else "",
              "refiner: " + ", ".join(engine.refiners()) if args.refiner else "",
              "safety checker on" if engine.safety_checker else ""]
    if any(extras):
        print("; ".join(e for e in extras if e), flush=True)
    try:
        store = ResultStore(args.output_dir or default_output_dir(), args.keep_results, args.keep_days * 86400)
        print(f"results are kept in {store.folder}", flush=True)
        asyncio.run(_serve(App(engine, store=store, security=security), args.host, args.port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"easel serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    return 0


async def _serve(app, host: str, port: int) -> None:
    await app.start(host, port)
    print(f"Easel is serving on ws://{host}:{app.port} (Ctrl+C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("Easel: shutting down", flush=True)
    await app.close()


# -- client commands --------------------------------------------------------------------------
class ProgressBar:
    """A one-line progress bar on stderr (only when it is a terminal, else one line per stage)."""

    def __init__(self, label: str, width: int = 30, stream=None):
        self.label, self.width = label, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = ""

    def update(self, step: int, total: int, stage: str) -> None:
        if self.tty:
            filled = int(self.width * step / total) if total else 0
            bar = "#" * filled + "." * (self.width - filled)
            count = f"{step}/{total}" if total else ""
            self.stream.write(f"\r{self.label}: [{bar}] {count} {stage[:40]:<40}")
            self.stream.flush()
        elif stage != self._last or (total and step == total):
            self.stream.write(f"{self.label}: {stage} {step}/{total}\n")
            self.stream.flush()
        self._last = stage

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _read_png(path: Path, field: str) -> Image:
    try:
        return Image.png(path.read_bytes())
    except OSError as exc:
        raise ProtocolError(f"cannot read --{field} {path}: {exc.strerror}", field=field) from None
    except ProtocolError:
        raise ProtocolError(f"--{field} {path} is not a PNG file; convert it to PNG", field=field) from None


def cmd_generate(args: argparse.Namespace) -> int:
    if args.prompt is None and not args.upscale:
        print("easel generate: --prompt is required (only --upscale may leave it out)", file=sys.stderr)
        return 2
    try:
        image = _read_png(args.image, "image") if args.image else None
        mask = _read_png(args.mask, "mask") if args.mask else None
        strength = args.strength if args.strength is not None else (0.6 if image and not mask and not args.upscale
                                                                    else 1.0)  # upscale: 1.0 = server default
        request = GenerateRequest(job=new_job_id(), prompt=args.prompt or "", negative_prompt=args.negative,
                                  model=args.model, steps=args.steps, guidance=args.guidance, seed=args.seed,
                                  batch=args.batch, width=args.width, height=args.height,
                                  scheduler=args.scheduler, strength=strength, upscale=args.upscale, preview=False,
                                  **_feature_fields(args))
        control = _read_png(args.control_image, "control-image") if args.control_image else None
        GenerateRequest.from_message(request.to_message())
    except ProtocolError as exc:
        print(f"easel generate: {exc}", file=sys.stderr)
        return 2
    bar = ProgressBar("generating", stream=open("/dev/null", "w") if args.quiet else None)

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
    paths = output_paths(args.out, len(result.images))
    for path, item in zip(paths, result.images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_as_png(item.image))
        print(f"{path}  seed {item.seed}  at {item.x},{item.y}  {item.image.width}x{item.image.height}")
    total = result.timings.get("total_s")
    if total is not None:
        print(f"done in {total:.2f} s on the server", file=sys.stderr)
    return 0


def parse_lora(text: str) -> dict:
    """``NAME[:WEIGHT]`` -> {"name", "weight"}; ProtocolError (field loras) for a weight that is no number."""
    name, sep, weight = text.rpartition(":")
    if not sep:
        return {"name": text, "weight": 1.0}
    try:
        return {"name": name, "weight": float(weight)}
    except ValueError:
        raise ProtocolError(f"--lora {text!r}: the weight after ':' must be a number", field="loras") from None


def _feature_fields(args: argparse.Namespace) -> dict:
    """GenerateRequest fields of the power-feature flags (docs/features.md)."""
    return {"loras": [parse_lora(t) for t in args.lora] or None, "control_model": args.control_model,
            "control_strength": args.control_strength, "variation_seed": args.variation_seed,
            "variation_strength": args.variation_strength, "refiner": args.refiner,
            "refiner_switch": args.refiner_switch}


def output_paths(out: Path, count: int) -> list[Path]:
    """OUT.png for one image; OUT-1.png, OUT-2.png … for a batch."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(1, count + 1)]


def _as_png(image: Image) -> bytes:
    if image.format == "png":
        return image.data
    import io

    from PIL import Image as PILImage

    mode = {"rgba": "RGBA", "gray": "L"}.get(image.format)
    pil = PILImage.frombytes(mode, (image.width, image.height), image.data) if mode else PILImage.open(io.BytesIO(image.data))
    buf = io.BytesIO()
    pil.save(buf, "PNG")
    return buf.getvalue()


def cmd_models(args: argparse.Namespace) -> int:
    try:
        with Client(args.url, client_name=f"easel-cli/{__version__}") as client:
            welcome = client.welcome
            models = client.models()
    except ClientError as exc:
        print(f"easel models: {exc}", file=sys.stderr)
        return 1
    print(f"server {welcome.get('server')} on {welcome.get('device')} ({welcome.get('dtype')})")
    for m in models:
        default = " (default)" if m["id"] == welcome.get("default_model") else ""
        w, h = m["native"]
        print(f"{m['id']}{default}  family {m['family']}  native {w}x{h}  steps {m['default_steps']}  "
              f"guidance {m['default_guidance']}  {'loaded' if m.get('loaded') else 'not loaded'}")
    return 0


# -- plugins and demo model -------------------------------------------------------------------
def cmd_demo_model(args: argparse.Namespace) -> int:
    from .server.demo.train import main as train_main

    rest = [a for a in args.rest if a != "--"]
    return train_main(rest)


def cmd_install_plugin(args: argparse.Namespace) -> int:
    from .plugin_install import install_plugin

    target = install_plugin(args.editor, args.dest, args.kritarc)
    print(f"installed the Easel {args.editor} plugin in {target}")
    if args.editor == "krita":
        print("restart Krita; the docker is under Settings > Dockers > Easel")
    else:
        print("restart GIMP; the commands are under Filters > Easel")
    return 0


def cmd_package_plugin(args: argparse.Namespace) -> int:
    from .plugin_install import package_plugin

    print(f"wrote {package_plugin(args.editor, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
