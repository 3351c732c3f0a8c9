"""``easel serve`` settings: built-in defaults < the config file (TOML) < command-line flags.

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

import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_ENV = "EASEL_CONFIG"


class SettingsError(Exception):
    """A config file or flag value Easel cannot use; the message names it and the fix."""


@dataclass
class ServeSettings:
    """Everything ``easel serve`` can be told (flags and config file alike)."""

    models: list[str] = field(default_factory=list)
    models_dirs: list[str] = field(default_factory=list)
    loras_dir: str | None = None
    control_models: list[str] = field(default_factory=list)
    refiner: str | None = None
    safety_checker: bool | str = False
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    allow_origins: list[str] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "auto"
    max_loaded: int = 2
    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool | str = False  # true / "model", or "sequential" (per layer, least memory)
    preload: bool = True
    sd3_t5: bool = True  # false: SD 3/3.5 without their T5 encoder (flag --no-sd3-t5)
    channels_last: str = "auto"  # auto (on for bfloat16 on the CPU) | on | off
    compile: bool = False  # torch.compile the model (minutes per new size on a CPU)
    threads: int | None = None
    output_dir: str | None = None
    keep_results: int = 200
    keep_days: float = 7.0
    verbose: bool = False


PATH_KEYS = {"models_dirs", "loras_dir", "output_dir"}  # relative to the config file's folder
CHANNELS_LAST = ("auto", "on", "off")  # the channels_last choices (engine/speed.py)
_CHOICES = {"device": ("auto", "cpu", "cuda", "mps"), "dtype": ("auto", "float32", "float16", "bfloat16"),
            "channels_last": CHANNELS_LAST}
# argparse dests of `easel serve` whose setting has another name (or meaning)
FLAG_KEYS = {"model": "models", "models_dir": "models_dirs", "control_model": "control_models",
             "allow_origin": "allow_origins", "no_preload": "preload",
             "no_sd3_t5": "sd3_t5"}


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
    known = {f.name: f for f in dataclasses.fields(ServeSettings)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known settings: {', '.join(known)}"
            raise SettingsError(f"config file {path}: unknown setting {key!r}{hint}")
        out[key] = _checked(key, value, path)
    return out


def _checked(key: str, value: Any, path: Path) -> Any:
    default = getattr(ServeSettings(), key)
    where = f"config file {path}: {key!r}"
    if isinstance(default, list):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where} must be a list of strings, like {key} = [\"…\"]")
    elif key == "safety_checker":
        if not isinstance(value, (bool, str)):
            raise SettingsError(f"{where} must be true, false or a model reference (a string)")
    elif key == "cpu_offload":
        if not isinstance(value, bool) and value not in ("none", "model", "sequential"):
            raise SettingsError(f"{where} must be true, false, \"model\" or \"sequential\"")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false")
    elif key in ("port", "max_loaded", "keep_results", "threads"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise SettingsError(f"{where} must be a whole number")
    elif key == "keep_days":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SettingsError(f"{where} must be a number of days")
        value = float(value)
    elif not isinstance(value, str):
        raise SettingsError(f"{where} must be a string")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise SettingsError(f"{where} is {value!r}; use one of {', '.join(_CHOICES[key])}")
    if key in PATH_KEYS:
        value = [_path(v, path) for v in value] if isinstance(value, list) else _path(value, path)
    return value


def _path(value: str, config: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (config.parent / p))


def from_flags(given: dict[str, Any]) -> dict[str, Any]:
    """Settings from the flags actually given (argparse dests -> setting names)."""
    out: dict[str, Any] = {}
    for dest, value in given.items():
        key = FLAG_KEYS.get(dest, dest)
        if dest in ("no_preload", "no_sd3_t5"):
            value = not value
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list):
            value = [str(v) for v in value]
        out[key] = value
    return out


def resolve(flags: dict[str, Any], config: Path | None = None) -> tuple[ServeSettings, dict[str, str], Path | None]:
    """Effective settings, where each came from ("default", "file", "flag"), and the file read (or None).

    ``flags``: the flags given (setting names, see ``from_flags``); ``config``: ``--config`` (must exist),
    else the default file is read when it exists."""
    path = config if config is not None else default_path()
    from_file: dict[str, Any] = {}
    if config is not None or path.is_file():
        from_file = read_file(path)
    else:
        path = None
    known = {f.name for f in dataclasses.fields(ServeSettings)}
    settings, sources = ServeSettings(), {k: "default" for k in known}
    for values, source in ((from_file, "file"), (flags, "flag")):
        for key, value in values.items():
            if key in known and value is not None:
                setattr(settings, key, value)
                sources[key] = source
    return settings, sources, path


def to_toml(settings: ServeSettings, sources: dict[str, str], path: Path | None) -> str:
    """The effective settings as a config file (the token is not shown)."""
    lines = [f"# easel serve: effective settings (defaults < {path or 'no config file'} < flags)"]
    for f in dataclasses.fields(ServeSettings):
        value = getattr(settings, f.name)
        note = f"  # {sources.get(f.name, 'default')}"
        if f.name == "token":
            lines.append(f"# token = (set, not shown){note}" if value else f"# token = (none){note}")
        elif value is None:
            lines.append(f"# {f.name} = (none){note}")
        elif f.name == "models" and not value:
            lines.append(f"models = []{note}: the models folders' models, else the built-in demo")
        else:
            lines.append(f"{f.name} = {_toml(value)}{note}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
