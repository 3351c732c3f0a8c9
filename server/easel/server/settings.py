"""``easel serve`` settings: built-in defaults < the config file (TOML) < command-line flags.

Each setting is declared once, as a field of ``ServeSettings`` made with ``option(...)``: its
default, help, range or choices, flag and whether the config file may set it. The flags of
``easel serve`` (cli/library.py), the checks of the file, ``--print-config``, the docs table
(``python -m easel.server.settings --markdown docs/models.md``) and the engine's options
(``engine_kwargs``) all derive from those declarations.

The file (``--config FILE``, else ``config.toml`` in the user config folder, e.g.
``~/.config/easel/config.toml``; ``EASEL_CONFIG`` overrides that default) holds the same settings as
the flags, with the flags' names in snake case and lists where a flag repeats::

    models_dirs = ["~/ComfyUI/models", "~/stable-diffusion-webui/models"]
    models = ["stabilityai/sd-turbo"]      # named models come first; the first is the default
    device = "cuda"
    token = "…"

Relative paths in the file are relative to the file's folder. Unknown keys and wrong types are
errors that name the key and the fix.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from ..client.fields import replace_block
from .security import TOKEN_ENV
from .setting_spec import KEY, Setting, SettingsError, option, toml_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_ENV = "EASEL_CONFIG"
DEVICES = ("auto", "cpu", "cuda", "mps")  # each may carry :N (cuda); a list of GPUs runs one worker per GPU
DTYPES = ("auto", "float32", "float16", "bfloat16")
CHANNELS_LAST = ("auto", "on", "off")  # the channels_last choices (engine/speed.py)
OFFLOAD_MODES = ("none", "model", "sequential")  # the cpu_offload choices (engine/loading.py)
OPENVINO = ("auto", "on", "off")  # the openvino choices (engine/openvino_path.py)
DECODERS = ("full", "tiny")  # the decoder choices (engine/tiny_vae.py)
LIVE_DECODERS = ("auto", *DECODERS)  # the live_decoder choices: auto = tiny on the CPU, else as decoder
DOCS_TABLE = ("<!-- serve settings: generated from ServeSettings by "
              "`python -m easel.server.settings --markdown docs/models.md`; do not edit -->",
              "<!-- end of serve settings -->")


def _devices(value: str) -> str | None:
    for name in value.split(","):
        if name.strip().lower().partition(":")[0] not in DEVICES:
            return (f"is {value!r}; use one of {', '.join(DEVICES)} (cuda:N for one GPU, a list like cuda:0,cuda:1 "
                    "for one worker per GPU)")
    return None


@dataclass
class ServeSettings:
    """Everything ``easel serve`` can be told (flags and config file alike)."""

    models: list[str] = option(
        [], "hub id, diffusers folder or .safetensors/.ckpt file (repeat to serve several; the first is the "
        "default)", flag="--model", metavar="M",
        default_text="the models folders' models, else the built-in demo")
    models_dirs: list[str] = option(
        [], "models folder (A1111/Forge, ComfyUI or flat; repeat for several): its checkpoints, diffusers "
        "folders, LoRAs and ControlNets are offered, rescanned as clients ask; models the server is started "
        "with may lie elsewhere", flag="--models-dir", metavar="DIR", path=True, engine="models_dir")
    loras_dir: str | None = option(None, "folder of .safetensors LoRAs offered to clients", metavar="DIR",
                                   path=True, engine=True)
    control_models: list[str] = option([], "ControlNet (hub id, folder or .safetensors/.pth file) offered to "
                                       "clients; repeat for several",
                                       flag="--control-model", metavar="REF", engine=True)
    ip_adapters: list[str] = option([], "IP-Adapters for reference layers: a folder (h94/IP-Adapter's layout, or "
                                    "adapter files with their image_encoder/), an adapter file or a cached hub id "
                                    "like h94/IP-Adapter; for FLUX.1 a FLUX Redux folder or "
                                    "black-forest-labs/FLUX.1-Redux-dev; repeat for several",
                                    flag="--ip-adapter", metavar="REF", engine=True)
    refiner: str | None = option(None, "SDXL refiner model (hub id, folder or file) for refiner jobs", metavar="REF",
                                 engine=True)
    safety_checker: bool | str = option(
        False, "check results with the SD safety checker (REF: a folder or hub id, default "
        "CompVis/stable-diffusion-safety-checker); flagged images come back black", const=True, metavar="REF",
        engine=True)
    host: str = option("127.0.0.1", "address to listen on (off loopback a token is needed)")
    port: int = option(8765, "port to listen on (0: any free port)", low=0, high=65535)
    token: str | None = option(None, "require this token from clients; needed off loopback", env=TOKEN_ENV,
                               secret=True)
    allow_origins: list[str] = option([], "let browser pages from ORIGIN connect (none by default)",
                                      flag="--allow-origin", metavar="ORIGIN")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps; a GPU list (cuda:0,cuda:1) runs one worker per "
                         "GPU, each with its own models (docs/scaling.md)", metavar="D", validator=_devices,
                         engine=True)
    dtype: str = option("auto", "weights' dtype (auto: float16 on GPUs, bfloat16 or float32 on the CPU)",
                        choices=DTYPES, engine=True)
    max_loaded: int = option(2, "models kept in memory (LRU)", metavar="N", low=1, engine=True)
    attention_slicing: bool = option(False, "lower memory, slower", engine=True)
    vae_tiling: bool = option(False, "decode big images in tiles", engine=True)
    cpu_offload: bool | str = option(
        False, "CPU offload (needs an accelerator): model (the default when given alone) or sequential (per "
        "layer: least memory, slowest)", choices=OFFLOAD_MODES, const="model", metavar="MODE", engine=True)
    preload: bool = option(True, "load the default model at start-up (--no-preload: on first use)")
    sd3_t5: bool = option(True, "load SD 3/3.5 with their T5 encoder (--no-sd3-t5: about 9.5 GB less; prompts "
                          "followed less closely)", engine=True)
    prefer_inpaint_models: bool = option(True, "fill, expand, remove and background jobs on a plain SD 1.x/SDXL/"
                                         "FLUX.1 model run on a served inpainting model of its family", engine=True)
    background_model: str = option("isnet-general-use", "rembg model (name or .onnx file) that finds the subject "
                                   "background jobs keep (docs/imaging.md)", metavar="NAME|FILE", engine=True)
    channels_last: str = option("auto", "convolution weights in channels-last layout: auto = on for bfloat16 on "
                                "the CPU, where it is faster (docs/performance.md)", choices=CHANNELS_LAST,
                                engine=True)
    compile: bool = option(False, "torch.compile the model: faster steps after the first job at each size, which "
                           "compiles for minutes on a CPU (kernels are cached for later starts; docs/performance.md)",
                           engine=True)
    openvino: str = option("auto", "run SD 1.x/2.x and SDXL UNets and VAE decoders through OpenVINO on the CPU in "
                           "float32 (the openvino extra: pip install '.[openvino]' in the checkout): auto = when installed, for "
                           "full-size SD 1.x/2.x models; on = also SDXL and small ones; off = torch "
                           "(docs/performance.md)",
                           choices=OPENVINO, engine=True)
    decoder: str = option("full", "the VAE decoder that makes the pixels: full = the model's own; tiny = the TAESD "
                          "decoder of each model's family (a far smaller network: faster, slightly less detail; "
                          "fetched once with easel download, e.g. madebyollin/taesd; docs/performance.md)",
                          choices=DECODERS, engine=True)
    live_decoder: str = option("auto", "the decoder of live painting's frames: auto = tiny on the CPU when it is at "
                               "hand (else the full VAE), elsewhere as --decoder", choices=LIVE_DECODERS, engine=True)
    threads: int | None = option(None, "CPU threads for inference (on a busy 2-core machine 1 was measured 3-6x "
                                 "faster, docs/performance.md)", metavar="N", low=1,
                                 default_text="torch's choice, one per core")
    output_dir: str | None = option(None, "where finished results are kept", metavar="DIR", path=True,
                                    default_text="the user data folder")
    keep_results: int = option(200, "results kept until acknowledged", metavar="N", low=0)
    keep_days: float = option(7.0, "results older than this many days are deleted", metavar="DAYS", low=0)
    verbose: bool = option(False, "log what the server does", short="-v")
    # flags only (not in the config file)
    workers: int = option(1, "workers on the one device, each with its own copy of the models (mainly for tests "
                          "on the CPU); the fair queue feeds them all", metavar="N", low=1, file=False)
    ray: str | None = option(None, "run the engine in Ray Serve replicas: 'local' starts Ray on this machine "
                             "(127.0.0.1), an address (ray://head:10001 or head:6379) joins a cluster; needs Ray "
                             "Serve: pip install '.[ray]' in the checkout (docs/scaling.md)", metavar="ADDRESS", file=False)
    replicas: str = option("1", "with --ray: engine replicas (one GPU each when the cluster has GPUs); MIN:MAX "
                           "autoscales", metavar="N|MIN:MAX", file=False)
    ray_timeout: float = option(120.0, "with --ray: a replica silent this long (no step, no load progress) is given "
                                "up on and the job sent once more", metavar="SECONDS", low=1, file=False)
    idle_exit: float | None = option(None, "exit after SECONDS with no client connected and no job (servers "
                                     "started by GIMP)", metavar="SECONDS", low=0, file=False)
    parent_pid: int | None = option(None, "exit when process PID ends (the editor that started this server)",
                                    metavar="PID", low=1, file=False)
    status_lines: bool = option(False, "print start-up progress as 'easel-status: {json}' lines (for the editor "
                                "plugins)", file=False)


@cache
def declared() -> dict[str, Setting]:
    """The settings of ``ServeSettings`` in declaration order, by name."""
    out = {}
    for f in fields(ServeSettings):
        parts = [p.strip() for p in str(f.type).split("|")]
        kinds = [p for p in parts if p != "None"]
        kind = "list" if kinds == ["list[str]"] else "|".join(kinds)
        default = [] if kind == "list" else f.default
        out[f.name] = Setting(f.name, kind, "None" in parts, default, f.metadata[KEY])
    return out


def file_keys() -> dict[str, Setting]:
    """The settings a config file may hold."""
    return {name: s for name, s in declared().items() if s.opt.file}


def engine_kwargs(settings: ServeSettings, models: list[str]) -> dict[str, Any]:
    """The ``Engine`` keywords the settings give (a plain server and Ray replicas alike)."""
    kwargs: dict[str, Any] = {"models": models}
    for name, s in declared().items():
        if s.opt.engine:
            kwargs[name if s.opt.engine is True else s.opt.engine] = getattr(settings, name)
    return kwargs


def default_path() -> Path:
    """Where the config file is looked for when ``--config`` is not given."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_path

    return user_config_path("easel", appauthor=False) / "config.toml"


def read_file(path: Path) -> dict[str, Any]:
    """The settings a TOML file sets (validated); SettingsError naming the file, key and fix."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML ({exc}); fix that line") from None
    if isinstance(data.get("serve"), dict):  # a [serve] table is accepted too
        data = {**{k: v for k, v in data.items() if k != "serve"}, **data["serve"]}
    known = file_keys()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known settings: {', '.join(known)}"
            raise SettingsError(f"config file {path}: unknown setting {key!r}{hint}")
        try:
            value = known[key].check(value)
        except ValueError as exc:
            raise SettingsError(f"config file {path}: {key!r} {exc}") from None
        if known[key].opt.path:
            value = [_path(v, path) for v in value] if isinstance(value, list) else _path(value, path)
        out[key] = value
    return out


def _path(value: str, config: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (config.parent / p))


def resolve(flags: dict[str, Any], config: Path | None = None) -> tuple[ServeSettings, dict[str, str], Path | None]:
    """Effective settings, where each came from ("default", "file", "flag", "$ENV"), and the file read (or None).

    ``flags``: the flags given, by setting name (already checked); ``config``: ``--config`` (must
    exist), else the default file is read when it exists. A setting with an environment variable
    takes it when no flag sets it."""
    path = config if config is not None else default_path()
    from_file: dict[str, Any] = {}
    if config is not None or path.is_file():
        from_file = read_file(path)
    else:
        path = None
    settings, sources = ServeSettings(), {name: "default" for name in declared()}
    from_env = {name: os.environ[s.opt.env] for name, s in declared().items()
                if s.opt.env and os.environ.get(s.opt.env) and name not in flags}
    for values, source in ((from_file, "file"), (from_env, "$"), (flags, "flag")):
        for key, value in values.items():
            if key in sources and value is not None:
                setattr(settings, key, value)
                sources[key] = f"${declared()[key].opt.env}" if source == "$" else source
    return settings, sources, path


def to_toml(settings: ServeSettings, sources: dict[str, str], path: Path | None) -> str:
    """The effective settings as a config file (secrets are not shown)."""
    lines = [f"# easel serve: effective settings (defaults < {path or 'no config file'} < flags)"]
    for name, s in file_keys().items():
        value = getattr(settings, name)
        note = f"  # {sources.get(name, 'default')}"
        if s.opt.secret:
            lines.append(f"# {name} = (set, not shown){note}" if value else f"# {name} = (none){note}")
        elif value is None:
            lines.append(f"# {name} = (none){note}")
        elif value == s.default and s.opt.default_text:
            lines.append(f"{name} = {toml_value(value)}{note}: {s.opt.default_text}")
        else:
            lines.append(f"{name} = {toml_value(value)}{note}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The config file's keys as a markdown table: key, flag, type, default, meaning."""
    rows = ["| key | flag | type | default | meaning |", "|---|---|---|---|---|"]
    for name, s in file_keys().items():
        kind = {"list": "list of strings", "bool|str": "bool or string"}.get(s.kind, s.kind)
        allowed = s.allowed()
        rows.append(f"| `{name}` | `{s.flag}` | {kind}{': ' + allowed if allowed else ''} | "
                    f"{s.default_words('`')} | {s.opt.help} |")
    return "\n".join(rows) + "\n"


def _main(argv: list[str]) -> int:
    """``--markdown``: print the settings table; ``--markdown FILE``: rewrite it in FILE."""
    if not argv or argv[0] != "--markdown" or len(argv) > 2:
        print("usage: python -m easel.server.settings --markdown [docs/models.md]", file=sys.stderr)
        return 2
    if len(argv) == 1:
        print(markdown_table(), end="")
        return 0
    text = Path(argv[1]).read_text(encoding="utf-8")
    Path(argv[1]).write_text(replace_block(text, *DOCS_TABLE, markdown_table()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
