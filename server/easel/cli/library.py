"""The model library on the command line: ``easel download``, ``easel models --local`` and the config
file of ``easel serve`` (``--config``, ``--print-config``; docs/models.md)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..server.settings import ServeSettings, Setting, SettingsError, declared, resolve, to_toml
from .progress import ProgressBar

_PARSE = {"int": int, "float": float}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")  # what the hub accepts as ORG/NAME


# ----------------------------------------------------------------------------- easel serve


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per declared setting (settings.py), checked as it is parsed, plus ``--config`` and
    ``--print-config``. Flags not given stay unset, so the config file can fill them."""
    for name, s in declared().items():
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": flag_help(s)}
        if s.kind == "bool":
            kw["action"] = "store_false" if s.default else "store_true"
        else:
            kw.update(type=flag_value(s), metavar=s.opt.metavar or
                      ("{" + ",".join(s.opt.choices) + "}" if s.opt.choices else None))
            if s.kind == "list":
                kw["action"] = "append"
            elif s.opt.const is not None:
                kw.update(nargs="?", const=s.opt.const)
        p.add_argument(*(x for x in (s.opt.short, s.flag) if x), **kw)
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="settings file (TOML; default: config.toml in the user config folder, if it exists); "
                        "flags win over it")
    p.add_argument("--print-config", action="store_true", help="print the effective settings and exit")


def flag_help(s: Setting) -> str:
    """The declared help plus what it allows and its default (and its config key when it has one)."""
    notes = [x for x in (s.allowed(), "" if s.kind == "bool" else "default " + s.default_words(),
                         f"config key {s.name}" if s.opt.file else "") if x]
    return f"{s.opt.help} ({'; '.join(notes)})".replace("%", "%%")


def flag_value(s: Setting) -> Any:
    """argparse's ``type`` for ``s``: the word parsed and checked against the declaration."""
    def parse(word: str) -> Any:
        try:
            value = _PARSE.get(s.kind, str)(word)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'a whole number' if s.kind == 'int' else 'a number'} "
                                             f"(got {word!r})") from None
        if s.kind == "list":
            return value
        try:
            return s.check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def apply_settings(args: argparse.Namespace) -> int | None:
    """Fill ``args`` with the effective settings (defaults < config file < flags), one attribute per
    setting, and ``args.settings``; an exit code when the command is done (``--print-config``) or the
    settings are wrong, else None."""
    flags = {name: getattr(args, name) for name in declared() if hasattr(args, name)}
    try:
        settings, sources, path = resolve(flags, getattr(args, "config", None))
    except SettingsError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "print_config", False):
        print(to_toml(settings, sources, path), end="")
        return 0
    vars(args).update(vars(settings))
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
    if not _HUB_ID.fullmatch(args.hub_id):
        print(f"easel download: {args.hub_id!r} is not a Hugging Face id; write it as ORG/NAME, like "
              "stabilityai/sd-turbo", file=sys.stderr)
        return 2
    problem = cannot_write(args.to) if args.to else None
    if problem:
        print(f"easel download: cannot write --to {args.to}: {problem}", file=sys.stderr)
        return 2
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
    except ValueError as exc:  # the hub's own id rules (huggingface_hub's HFValidationError)
        bar.done()
        print(f"easel download: HUB_ID {args.hub_id!r}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.done()
        print("easel download: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    bar.done()
    print(f"{args.hub_id}: {path}")
    ref = path if target else args.hub_id
    kind = hub.kind_of(path)
    if kind == "pipeline":
        print(f"serve it with: easel serve --model {ref}")
    elif kind == "controlnet":
        print(f"offer it with: easel serve --control-model {ref} (or keep it in a models folder's controlnet/)")
    elif kind == "tiny_vae":
        where = "keep its folder in a models folder's vae_approx/" if target else "it stays in the Hugging Face cache"
        print(f"a tiny VAE decoder for easel serve --decoder tiny (docs/performance.md): {where}")
    else:
        print("a model for the server's helpers (e.g. a From image preprocessor): keep it in a models folder's "
              f"annotators/ (or in the Hugging Face cache, as {args.hub_id})")
    return 0


def cannot_write(folder: Path) -> str | None:
    """Why files could not be written in ``folder`` (made if missing), else None; creates nothing."""
    probe = folder.expanduser().absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK) or not _real_folder(probe):
        return f"{probe} is not writable; pick another folder"
    return None


def _real_folder(path: Path) -> bool:
    """False for kernel file systems (/proc, /sys), where nothing can be made even as root."""
    try:
        return os.statvfs(path).f_blocks > 0 if hasattr(os, "statvfs") else True
    except OSError:
        return False


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


__all__ = ["ServeSettings", "add_local_arguments", "add_parsers", "add_setting_flags", "apply_settings",
           "cmd_models_local"]
