"""Declared message fields: each field's type, range or choices, default and help, written once.

A dataclass field made with ``declare(...)`` carries a ``Spec`` in its metadata; its type comes
from the annotation (``int``, ``float``, ``str``, ``bool``, ``list``, each optionally ``| None``)
and its default from the dataclass. Everything else is derived: ``declared(cls)`` checks values
(``FieldError`` names the field and says the allowed values), ``markdown_table`` writes the docs
table, and ``easel generate`` builds its flags from the same ``Declared`` objects.

Stdlib only: bundled into the plugins with the rest of ``easel.client``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any

_KEY = "easel"
_KINDS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
                                       "list": (list,)}
_KIND_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "list": "a list"}
_DOC_KINDS = {"str": "string", "int": "int", "float": "number", "bool": "bool", "list": "list"}
BIG = 2**63 - 1  # the largest seed; shown as 2^63-1


class FieldError(ValueError):
    """A value that its declaration does not allow; ``field`` names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Spec:
    """What a field allows and means. ``low``/``high`` bound numbers (``below_high``: high excluded)."""

    help: str
    low: float | None = None
    high: float | None = None
    below_high: bool = False
    choices: tuple[Any, ...] = ()
    default_text: str = ""  # what the default means in docs, e.g. "model default" for None
    hint: str = ""  # appended to a range error: how to fix it
    validator: Callable[[Any], str | None] | None = None  # structure check: returns what is wrong
    wire_default: bool = True  # False: a value equal to the default stays off the wire
    flag: str | None = ""  # ``easel generate`` flag: "" = --name-with-dashes, None = no flag
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # a list field: one command-line word -> one item
    whole: bool = False  # a list field whose flag is given once: ``parse`` makes the whole list of its word
    also: tuple[tuple[str, str, str, Callable[[str], Any]], ...] = ()  # more list flags: (flag, metavar, help, parse)
    items: type | None = None  # a list field of declared items: the item dataclass (see ``from_wire``)
    attachment: bool = False  # a string field naming an image attachment of the message
    group: str = ""  # where the field belongs in the request tree (docs, ``easel generate -h``)


def declare(default: Any = MISSING, help: str = "", **spec: Any) -> Any:
    """A dataclass field with its ``Spec``: ``steps: int | None = declare(None, "…", low=1)``."""
    return field(default=default, metadata={_KEY: Spec(help=help, **spec)})


@dataclass(frozen=True)
class Declared:
    """One declared field: name, kind (``int``, ``float`` …), optional (None allowed), default, spec."""

    name: str
    kind: str
    optional: bool
    default: Any
    spec: Spec

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def flag(self) -> str | None:
        return None if self.spec.flag is None else self.spec.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` converted (numbers to float) if allowed, else FieldError naming the field."""
        if value is None and self.optional:
            return None
        types = _KINDS[self.kind]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            null = " or null" if self.optional else ""
            raise FieldError(self.name, f"'{self.name}' must be {_KIND_WORDS[self.kind]}{null} "
                                        f"(got {type(value).__name__})")
        if self.kind == "float":
            value = float(value)
            if not math.isfinite(value):
                raise FieldError(self.name, f"'{self.name}' must be a finite number (got {value})")
        s = self.spec
        if s.items is not None:
            return self._check_items(value)
        if s.choices and value not in s.choices:
            self._fail(f"must be {choices_text(s.choices, '')}", value)
        too_low = s.low is not None and value < s.low
        too_high = s.high is not None and (value >= s.high if s.below_high else value > s.high)
        if too_low or too_high:
            self._fail(f"must be {self.range_words()}", value)
        problem = s.validator(value) if s.validator else None
        if problem:
            raise FieldError(self.name, f"'{self.name}' {problem}")
        return value

    def _check_items(self, value: list) -> list:
        """Each item of a list of declared items, as its dataclass; errors name ``field[i].sub``."""
        if self.spec.high is not None and len(value) > self.spec.high:
            raise FieldError(self.name, f"'{self.name}' may list at most {num(self.spec.high)} items "
                                        f"(got {len(value)})")
        out = []
        for i, item in enumerate(value):
            where = f"{self.name}[{i}]"
            if isinstance(item, self.spec.items):
                item = to_wire(item)
            if not isinstance(item, dict):
                raise FieldError(where, f"'{where}' must be an object with the fields "
                                        f"{', '.join(declared(self.spec.items))}")
            try:
                out.append(from_wire(self.spec.items, item))
            except FieldError as exc:
                raise FieldError(f"{where}.{exc.field}", f"'{where}.{str(exc)[1:]}") from None
        return out

    def _fail(self, allowed: str, value: Any) -> None:
        hint = f"; {self.spec.hint}" if self.spec.hint else ""
        raise FieldError(self.name, f"'{self.name}' {allowed} (got {value!r}){hint}")

    def range_words(self) -> str:
        """The range in words, for messages: "between 1 and 64", "at least 0.5 and below 1" …"""
        low, high = self.spec.low, self.spec.high
        if low is not None and high is not None:
            return (f"at least {num(low)} and below {num(high)}" if self.spec.below_high
                    else f"between {num(low)} and {num(high)}")
        if low is not None:
            return f"at least {num(low)}"
        return f"below {num(high)}" if self.spec.below_high else f"at most {num(high)}"

    def range_text(self) -> str:
        """The range in short form, for tables and help: "1..64", "0.5..<1", "≥ 1", "2 or 4"."""
        low, high, s = self.spec.low, self.spec.high, self.spec
        if s.choices:
            return choices_text(s.choices, "`")
        if low is not None and high is not None:
            return f"{num(low)}..{'<' if s.below_high else ''}{num(high)}"
        if low is not None:
            return f"≥ {num(low)}"
        if high is not None:
            return f"{'<' if s.below_high else '≤'} {num(high)}"
        return ""

    def default_text(self) -> str:
        """The default for docs and help: the spec's words, "required", or the JSON value."""
        if self.spec.default_text:
            return self.spec.default_text
        if self.required:
            return "required"
        return "none" if self.default is None else f"`{json.dumps(self.default)}`"


def num(value: float) -> str:
    """A bound as people write it: 1, 0.5, 2^63-1."""
    if value == BIG:
        return "2^63-1"
    return f"{value:g}" if isinstance(value, float) else str(value)


def choices_text(choices: tuple[Any, ...], quote: str) -> str:
    words = [f"{quote}{c}{quote}" for c in choices]
    return " or ".join(words) if len(words) == 2 else "one of " + ", ".join(words)


@cache
def declared(cls: type) -> dict[str, Declared]:
    """The declared fields of dataclass ``cls``, in declaration order, by name."""
    out = {}
    for f in fields(cls):
        parts = [p.strip() for p in str(f.type).split("|")]
        kinds = [p for p in parts if p != "None"]
        if len(kinds) != 1 or kinds[0] not in _KINDS or _KEY not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: declare it as `name: int | None = declare(…)` "
                            f"with one of {', '.join(_KINDS)} (got {f.type!r})")
        out[f.name] = Declared(f.name, kinds[0], "None" in parts, f.default, f.metadata[_KEY])
    return out


def to_wire(obj: Any) -> dict[str, Any]:
    """A declared dataclass as JSON-ready fields: None and (where ``wire_default`` is off) default
    values stay off the wire; lists of declared items become lists of objects."""
    data: dict[str, Any] = {}
    for name, d in declared(type(obj)).items():
        value = getattr(obj, name)
        if value is None or (not d.spec.wire_default and value == d.default):
            continue
        data[name] = [to_wire(v) if is_dataclass(v) else v for v in value] if d.spec.items is not None else value
    return data


def from_wire(cls: type, data: dict[str, Any]) -> Any:
    """A declared dataclass from JSON fields, each checked (``FieldError`` names the field); unknown
    and missing required fields are errors too."""
    known = declared(cls)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise FieldError(unknown[0], f"'{unknown[0]}' is not a field; use {', '.join(known)}")
    for name, d in known.items():
        if d.required and name not in data:
            raise FieldError(name, f"'{name}' is missing: {d.spec.help}")
    return cls(**{name: d.check(data[name]) for name, d in known.items() if name in data})


def attachment_names(obj: Any) -> list[str]:
    """The attachment names a declared dataclass refers to, at any depth (``Spec.attachment``); list items
    may be their dataclasses or still plain objects (as a command line's flags make them)."""
    names = []
    for name, d in declared(type(obj)).items():
        value = getattr(obj, name)
        if d.spec.attachment and value is not None:
            names.append(value)
        elif d.spec.items is not None and value:
            for item in value:
                if is_dataclass(item):
                    names.extend(attachment_names(item))
                elif isinstance(item, dict):
                    names.extend(item[sub] for sub, sd in declared(d.spec.items).items()
                                 if sd.spec.attachment and item.get(sub) is not None)
    return names


def item_types(cls: type) -> list[type]:
    """The item dataclasses that ``cls``'s list fields declare, in declaration order."""
    return [d.spec.items for d in declared(cls).values() if d.spec.items is not None]


def markdown_table(cls: type) -> str:
    """The fields of ``cls`` as a markdown table: field, type, default, meaning (and group, first, in the
    order the groups are first declared, when the fields declare groups)."""
    grouped = any(d.spec.group for d in declared(cls).values())
    rows = ["| group | field | type | default | meaning |" if grouped else "| field | type | default | meaning |",
            "|---|---|---|---|---|" if grouped else "|---|---|---|---|"]
    order = {g: i for i, g in enumerate(dict.fromkeys(d.spec.group for d in declared(cls).values()))}
    for d in sorted(declared(cls).values(), key=lambda d: order[d.spec.group]):
        kind, allowed = _DOC_KINDS[d.kind], d.range_text()
        if d.spec.items is not None:
            most = f", at most {num(d.spec.high)}" if d.spec.high is not None else ""
            kind = f"list of `{d.spec.items.__name__}`{most}"
        elif d.spec.attachment:
            kind = "attachment name"
        elif d.spec.choices:
            kind = f"{kind}: {allowed}" if d.kind == "str" else allowed
        elif allowed:
            kind = f"{kind} {allowed}"
        group = f"{d.spec.group} | " if grouped else ""
        rows.append(f"| {group}`{d.name}` | {kind} | {d.default_text()} | {d.spec.help} |")
    return "\n".join(rows) + "\n"


def replace_block(text: str, begin: str, end: str, block: str) -> str:
    """``text`` with what lies between the marker lines ``begin`` and ``end`` replaced by ``block``."""
    try:
        head, rest = text.split(begin + "\n", 1)
        _, tail = rest.split(end, 1)
    except ValueError:
        raise ValueError(f"the markers {begin!r} and {end!r} are missing; put them around the table") from None
    return f"{head}{begin}\n{block}{end}{tail}"
