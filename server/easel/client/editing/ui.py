"""Small helpers for plugin UIs: progress text, seeds, settings, server URL, parameter checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from ..connection import ProgressInfo
from ..protocol import GenerateRequest, request_fields
from .core import Params, PlannedRequest


def model_choices(welcome: dict) -> tuple[list[str], str | None]:
    """Model ids a server offers (from its ``welcome``) and its default model; entries the server
    lists with a ``problem`` (a broken file in its models folder) are left out, see ``model_problems``."""
    ids = [m["id"] if isinstance(m, dict) else str(m) for m in welcome.get("models", [])
           if not (isinstance(m, dict) and m.get("problem"))]
    default = welcome.get("default_model") or (ids[0] if ids else None)
    return ids, default


def model_problems(welcome: dict) -> list[str]:
    """``"id: why it cannot be used"`` for each model the server lists but cannot serve."""
    return [f"{m['id']}: {m['problem']}" for m in welcome.get("models", []) if isinstance(m, dict) and m.get("problem")]


def progress_text(info: ProgressInfo) -> tuple[int, str]:
    """A progress event as a percentage (0..100) and a few plain words for the UI."""
    if info.stage == "queued":
        return 0, info.message or "waiting in the server's queue"
    if info.stage == "load":
        percent = int(100 * info.step / info.total) if info.total else 0
        return percent, info.message or "loading the model"
    if info.total:
        return int(100 * info.step / info.total), f"step {info.step} of {info.total}"
    return 0, info.message or "working"


def strength_text(percent: int) -> str:
    """What the strength slider means at ``percent``: 100 generates, lower refines the canvas."""
    if percent >= 100:
        return "100%: new image (or a new selection content)"
    return f"{percent}%: refine what is on the canvas"


def parse_seed(text: str) -> int:
    """A seed typed by the painter: digits give a fixed seed, anything else -1 (random)."""
    text = text.strip()
    if not text.isdigit():
        return -1
    return min(int(text), 2**63 - 1)


_PARSE = {"int": int, "float": float, "str": str}


def declared_values(cls: type, data: Mapping[str, Any], text: bool = False) -> dict[str, Any]:
    """The fields of dataclass ``cls`` (each named as a request field) that ``data`` holds with a value
    its declaration allows; others are left out, so the caller's defaults stand. ``text``: the values
    are strings from a settings store, "" meaning None (the server's default) where that is allowed."""
    known, out = request_fields(), {}
    for f in fields(cls):
        value = data.get(f.name)
        if value is None or value == []:
            continue
        d = known[f.name]
        try:
            if text:
                value = None if value == "" and d.optional else _PARSE[d.kind](value)
            out[f.name] = d.check(value)
        except (ValueError, KeyError):  # unreadable or not allowed (FieldError is a ValueError)
            continue
    return out


def params_to_settings(params: Params) -> dict[str, str]:
    """``Params`` as strings for an editor's settings store (None becomes "")."""
    return {f.name: "" if getattr(params, f.name) is None else str(getattr(params, f.name)) for f in fields(Params)}


def params_from_settings(values: Mapping[str, str], defaults: Params | None = None) -> Params:
    """The inverse of ``params_to_settings``; a missing, unreadable or out-of-range value keeps its default."""
    return replace(defaults or Params(prompt=""), **declared_values(Params, values, text=True))


URL_ENV = "EASEL_URL"


DEFAULT_SERVER_URL = "ws://127.0.0.1:8765"


def resolve_url(explicit: str | None, environ: dict[str, str] | None = None, saved: str | None = None) -> str:
    """The server URL to use: the one given, else ``$EASEL_URL``, else the saved one, else the default.

    ``host:port`` without a scheme gets ``ws://``; surrounding blanks are dropped.
    """
    for candidate in (explicit, (environ or {}).get(URL_ENV), saved, DEFAULT_SERVER_URL):
        text = (candidate or "").strip()
        if text:
            return text if "://" in text else f"ws://{text}"
    return DEFAULT_SERVER_URL


TOKEN_ENV = "EASEL_TOKEN"


def resolve_token(explicit: str | None, environ: Mapping[str, str] | None = None,
                  saved: Mapping[str, str] | None = None, url: str = "") -> str | None:
    """The token to send to ``url``: the one typed, else ``$EASEL_TOKEN``, else the one saved for that
    URL (``saved`` maps server URLs to tokens, so a token never goes to another server); None: none.
    Surrounding blanks (a pasted newline) are dropped."""
    for candidate in (explicit, (environ or {}).get(TOKEN_ENV), (saved or {}).get(url)):
        text = (candidate or "").strip()
        if text:
            return text
    return None


def check_token(token: str | None) -> str | None:
    """A plain-words problem with a token typed by the painter, or None. It travels in an HTTP header,
    so only printable ASCII without spaces fits (``easel serve --token`` tokens do)."""
    if token and not all(33 <= ord(c) < 127 for c in token):
        return ("the server token may contain only printable ASCII characters without spaces: paste the "
                "token the server was started with (easel serve --token)")
    return None


def remember_token(saved: Mapping[str, str] | None, url: str, token: str | None) -> dict[str, str]:
    """``saved`` (server URL -> token) with ``token`` kept for ``url``; a blank token forgets that URL's."""
    out = {k: v for k, v in (saved or {}).items() if isinstance(k, str) and isinstance(v, str)}
    token = (token or "").strip()
    if token:
        out[url] = token
    else:
        out.pop(url, None)
    return out


def params_from_ui(prompt: str, negative_prompt: str = "", strength: float = 1.0, steps: int = 0,
                   guidance: float = -1.0, seed: int = -1, batch: int = 1, model: str = "") -> Params:
    """Params from editor widgets, whose 'use the default' values are 0 steps, a negative
    guidance and an empty model name (widgets cannot hold None)."""
    return Params(prompt=prompt.strip(), negative_prompt=negative_prompt.strip(), strength=float(strength),
                  steps=int(steps) if steps and steps > 0 else None,
                  guidance=float(guidance) if guidance is not None and guidance >= 0 else None,
                  seed=int(seed), batch=int(batch), model=model.strip() or None)


def check_request(planned: PlannedRequest) -> str | None:
    """Validate a planned request with the server's own rules; a plain-words problem or None."""
    from ..protocol import ProtocolError

    try:
        GenerateRequest.from_message(planned.request.to_message())
    except ProtocolError as exc:
        return f"bad parameter: {exc}"
    return None
