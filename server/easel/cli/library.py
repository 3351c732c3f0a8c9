"""The model library on the command line: ``easel download``, ``easel models --local`` and the config
file of ``easel serve`` (``--config``, ``--print-config``; docs/models.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..server.security import TOKEN_ENV
from ..server.settings import ServeSettings, SettingsError, from_flags, resolve, to_toml
from .progress import ProgressBar

# `easel serve` dests that are settings (defaults come from the config file, then from ServeSettings)
SETTING_DESTS = ("model", "models_dir", "loras_dir", "control_model", "refiner", "safety_checker", "host", "port",
                 "token", "allow_origin", "device", "dtype", "max_loaded", "attention_slicing", "vae_tiling",
                 "cpu_offload", "no_preload", "no_sd3_t5", "channels_last", "compile", "threads", "output_dir",
                 "keep_results", "keep_days", "verbose")
_BACK = {"models": "model", "models_dirs": "models_dir", "control_models": "control_model",
         "allow_origins": "allow_origin"}


# ----------------------------------------------------------------------------- easel serve


def engine_kwargs(args: argparse.Namespace, models: list[str]) -> dict[str, Any]:
    """The ``Engine`` options the ``easel serve`` flags (and config file) give, for a plain server and Ray alike."""
    return {"models": models, "device": args.device, "dtype": args.dtype, "max_loaded": args.max_loaded,
            "attention_slicing": args.attention_slicing, "vae_tiling": args.vae_tiling,
            "cpu_offload": args.cpu_offload, "models_dir": args.models_dir, "loras_dir": args.loras_dir,
            "control_models": args.control_model, "refiner": args.refiner,
            "safety_checker": args.safety_checker, "sd3_t5": not args.no_sd3_t5,
            "channels_last": args.channels_last, "compile": args.compile}


def prepare_serve_parser(p: argparse.ArgumentParser) -> None:
    """Add ``--config``/``--print-config``; flags not given stay unset, so the config file can fill them."""
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="settings file (TOML; default: config.toml in the user config folder, if it exists); "
                        "flags win over it")
    p.add_argument("--print-config", action="store_true", help="print the effective settings and exit")
    for action in p._actions:
        if action.dest in SETTING_DESTS:
            action.default = argparse.SUPPRESS


def apply_settings(args: argparse.Namespace) -> int | None:
    """Fill ``args`` with the effective settings (defaults < config file < flags); an exit code when the
    command is done (``--print-config``) or the settings are wrong, else None."""
    given = {dest: getattr(args, dest) for dest in SETTING_DESTS if hasattr(args, dest)}
    flags = from_flags(given)
    env_token = os.environ.get(TOKEN_ENV)
    if "token" not in flags and env_token:
        flags["token"] = env_token
    try:
        settings, sources, path = resolve(flags, getattr(args, "config", None))
    except SettingsError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    if "token" in flags and "token" not in given:
        sources["token"] = f"${TOKEN_ENV}"
    if getattr(args, "print_config", False):
        print(to_toml(settings, sources, path), end="")
        return 0
    for key, value in vars(settings).items():
        if key == "preload":
            args.no_preload = not value
        elif key == "sd3_t5":
            args.no_sd3_t5 = not value
        else:
            setattr(args, _BACK.get(key, key), value)
    args.model = settings.models or None
    args.settings = settings
    return None


# ----------------------------------------------------------------------------- easel download / models --local


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("download", help="download a diffusers pipeline from the Hugging Face hub (resumable)")
    p.add_argument("hub_id", help="a Hugging Face id like stabilityai/sd-turbo")
    p.add_argument("--to", type=Path, metavar="DIR",
                   help="put it in DIR/NAME (e.g. a models folder) instead of the Hugging Face cache")
    p.add_argument("--fp16", action="store_true", help="take the fp16 weights where the repository has them (GPUs)")
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    from ..server.engine import hub
    from ..server.engine.types import EngineError

    target = str(args.to.expanduser() / args.hub_id.rsplit("/", 1)[-1]) if args.to else None
    bar = ProgressBar("downloading")

    def report(done: int, total: int) -> None:
        bar.update(done, total, f"{done / 2**20:.0f} / {total / 2**20:.0f} MiB")

    try:
        path = hub.fetch(args.hub_id, args.fp16, report, lambda: False, to=target)
    except EngineError as exc:
        bar.done()
        print(f"easel download: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.done()
        print("easel download: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    bar.done()
    print(f"{args.hub_id}: {path}")
    print(f"serve it with: easel serve --model {path if target else args.hub_id}")
    return 0


def add_local_arguments(p: argparse.ArgumentParser) -> None:
    """``easel models --local [--models-dir DIR ...] [--config FILE]``."""
    p.add_argument("--local", action="store_true",
                   help="list the models on this computer (models folders and the Hugging Face cache), no server")
    p.add_argument("--models-dir", action="append", type=Path, metavar="DIR",
                   help="with --local: a models folder to list (default: models_dirs of the config file)")
    p.add_argument("--config", type=Path, metavar="FILE", help="with --local: the config file to take models_dirs from")


def cmd_models_local(args: argparse.Namespace) -> int:
    from ..server.library.local import counts, format_rows, local_models

    try:
        folders = [str(d) for d in args.models_dir] if args.models_dir else \
            resolve({}, getattr(args, "config", None))[0].models_dirs
        rows = local_models(folders)
    except (SettingsError, ValueError) as exc:
        print(f"easel models: {exc}", file=sys.stderr)
        return 2
    where = ", ".join(folders) if folders else "no models folder (give --models-dir or set models_dirs)"
    print(f"models folders: {where}; plus the Hugging Face cache")
    if rows:
        print(format_rows(rows))
    print(counts(rows))
    return 0


__all__ = ["ServeSettings", "add_local_arguments", "add_parsers", "apply_settings", "cmd_models_local",
           "prepare_serve_parser"]
