"""How one ``easel serve`` setting is declared and checked: ``option(...)`` makes a ``ServeSettings`` field
with its ``Option`` (help, flag, range or choices, config-file key, engine keyword), and ``Setting`` checks a
value from the config file or a flag against it (settings.py declares the settings themselves).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..client.fields import choices_text, num

_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
_KIND_WORDS = {"str": "a string", "int": "a whole number", "float": "a number", "bool": "true or false"}
KEY = "easel-setting"  # the dataclass field metadata key holding a setting's Option


class SettingsError(Exception):
    """A config file or flag value Easel cannot use; the message names it and the fix."""


@dataclass(frozen=True)
class Option:
    """How one setting is given and what it allows (``low``/``high`` bound numbers, both included)."""

    help: str
    flag: str = ""  # "" = --name-with-dashes (--no-name for a switch that is on by default)
    short: str = ""  # e.g. "-v"
    metavar: str | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    const: Any = None  # not None: the flag may stand alone and then means this value
    file: bool = True  # a key of the config file (False: a flag only)
    engine: str | bool = False  # an Engine keyword: True = the same name, or that keyword
    path: bool = False  # a path: relative ones in the config file are relative to its folder
    env: str = ""  # an environment variable that sets it when no flag does
    secret: bool = False  # --print-config does not show it
    default_text: str = ""  # what the default means, for help, docs and --print-config
    validator: Callable[[Any], str | None] | None = None  # returns what is wrong, or None


def option(default: Any, help: str, **spec: Any) -> Any:
    """A ``ServeSettings`` field with its ``Option``: ``port: int = option(8765, "…", low=0)``."""
    meta = {KEY: Option(help, **spec)}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Setting:
    """One declared setting: name, kind (str, int, float, bool, list or bool|str), default, option."""

    name: str
    kind: str
    optional: bool
    default: Any
    opt: Option

    @property
    def flag(self) -> str:
        dashed = self.name.replace("_", "-")
        return self.opt.flag or (f"--no-{dashed}" if self.kind == "bool" and self.default else f"--{dashed}")

    def check(self, value: Any) -> Any:
        """``value`` (from the file or a flag) as the setting holds it; ValueError saying what is allowed."""
        if value is None and self.optional:
            return None
        kind, opt = self.kind, self.opt
        if kind == "list":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f'must be a list of strings, like {self.name} = ["…"]')
        elif kind == "bool|str":
            if not isinstance(value, (bool, str)):
                what = choices_text(opt.choices, '"') if opt.choices else "a reference (a string)"
                raise ValueError(f"must be true, false or {what}")
        elif isinstance(value, bool) and kind != "bool" or not isinstance(value, _TYPES[kind]):
            raise ValueError(f"must be {_KIND_WORDS[kind]} (got {value!r})")
        if kind == "float":
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"must be a finite number (got {value})")
        if isinstance(value, str) and opt.choices and value not in opt.choices:
            raise ValueError(f"is {value!r}; use one of {', '.join(opt.choices)}")
        if kind in ("int", "float") and not _within(value, opt.low, opt.high):
            raise ValueError(f"must be {self.range_words()} (got {value!r})")
        problem = opt.validator(value) if opt.validator else None
        if problem:
            raise ValueError(problem)
        return value

    def range_words(self) -> str:
        low, high = self.opt.low, self.opt.high
        if low is not None and high is not None:
            return f"between {num(low)} and {num(high)}"
        return f"at least {num(low)}" if low is not None else f"at most {num(high)}"  # type: ignore[arg-type]

    def allowed(self) -> str:
        """What it allows, short: "0..65535", "≥ 1", "one of auto, on, off"."""
        if self.opt.choices:
            return choices_text(self.opt.choices, "")
        low, high = self.opt.low, self.opt.high
        if low is not None and high is not None:
            return f"{num(low)}..{num(high)}"
        return f"≥ {num(low)}" if low is not None else (f"≤ {num(high)}" if high is not None else "")

    def default_words(self, quote: str = "") -> str:
        """The default for help and docs: its words, the environment variable, "none" or the value."""
        if self.opt.default_text:
            return self.opt.default_text
        if self.opt.env:
            return f"{quote}${self.opt.env}{quote}"
        return "none" if self.default in (None, []) else f"{quote}{toml_value(self.default)}{quote}"


def _within(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def toml_value(value: Any) -> str:
    """A value as TOML writes it (the config file, --print-config, the docs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
