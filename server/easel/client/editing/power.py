"""Power features in plugins: LoRA text, sketch guides, variations, the second pass, upscale, history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from ..codes import ClientMessage
from ..connection import Client, ClientError, ProgressInfo, Result, new_job_id
from ..fields import attachment_names
from ..protocol import LORA_WEIGHT, MAX_LORAS, GenerateRequest, Image, request_fields
from .core import IMG2IMG, Params, PlannedRequest
from .ui import declared_values, model_choices


def parse_loras(text: str) -> list[dict] | None:
    """LoRAs typed as ``"ink.safetensors:0.8, styles/soft:0.5"`` (commas or new lines; a name
    without ``:weight`` gets 1.0) -> ``[{"name", "weight"}]``, or None when blank.
    ValueError in plain words for a weight that is no number or outside LORA_WEIGHT, or too many."""
    low, high = LORA_WEIGHT
    out = []
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, weight = part.rpartition(":")
        if not sep:
            name, weight = part, "1"
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"LoRA {part!r}: write it as name:weight, the weight a number (e.g. ink:0.8)") from None
        if not name.strip() or not low <= value <= high or value != value:
            raise ValueError(f"LoRA {part!r}: needs a name and a weight between {low:g} and {high:g}")
        out.append({"name": name.strip(), "weight": value})
    if len(out) > MAX_LORAS:
        raise ValueError(f"at most {MAX_LORAS} LoRAs per job (got {len(out)})")
    return out or None


def loras_text(loras: list | None) -> str:
    """The inverse of ``parse_loras``: ``"ink.safetensors:0.8, soft.safetensors:1"``."""
    return ", ".join(f"{x['name']}:{float(x.get('weight', 1.0)):g}" for x in loras or [])


def add_lora(text: str, name: str, weight: float = 1.0) -> str:
    """``text`` with LoRA ``name`` appended (a picker's action); unchanged when it is already listed."""
    try:
        current = parse_loras(text) or []
    except ValueError:
        current = []
    if any(x["name"] == name for x in current):
        return text
    return ", ".join(p for p in (text.strip().rstrip(","), f"{name}:{weight:g}") if p)


def match_loras(loras: list | None, available: list[str] | None) -> list | None:
    """Let painters leave out ``.safetensors``: a name the server does not list but whose
    ``name.safetensors`` it does list is completed. Unknown names stay (the server names them)."""
    if not loras or not available:
        return loras
    offered = set(available)
    return [dict(x, name=f"{x['name']}.safetensors") if x["name"] not in offered
            and f"{x['name']}.safetensors" in offered else x for x in loras]


def _default(name: str):
    """The protocol's declared default of request field ``name``."""
    return request_fields()[name].default


@dataclass
class Features:
    """The power features a painter set (docs/features.md); the defaults (the protocol's) change nothing."""

    loras: list | None = None
    control_model: str | None = None  # with a control image (``sketch_guide``)
    control_strength: float = _default("control_strength")
    variation_seed: int | None = None
    variation_strength: float = _default("variation_strength")
    refiner: bool = False
    refiner_switch: float = _default("refiner_switch")
    hires: str = _default("hires")  # "auto": a second pass for regions well above the model's size; "off"
    hires_strength: float | None = None  # None: the model family's default
    exact_size: bool = False  # run at the region's own size (docs/imaging.md)
    inpaint_mode: str = _default("inpaint_mode")  # "auto" stays off the wire (older servers lack the field)
    expand: list | None = None  # [LEFT, TOP, RIGHT, BOTTOM]: grow the canvas (build_request sends all of it)


def features_from_ui(loras: str = "", variation_seed: int = -1, variation_strength: float = Features.variation_strength,
                     control_model: str = "", control_strength: float = Features.control_strength,
                     refiner: bool = False, refiner_switch: float = Features.refiner_switch,
                     available_loras: list[str] | None = None, second_pass: bool = True,
                     hires_strength: float = 0.0, exact_size: bool = False, inpaint_mode: str = "",
                     expand: tuple[int, int, int, int] | list | None = None) -> Features:
    """Features from editor widgets, whose 'off' values are an empty text, a negative variation
    seed and an empty control model; a second-pass strength of 0 means the family's default; an empty
    mode is ``auto`` and four zero margins no expand. ValueError (plain words) for unreadable LoRA text,
    an unknown mode or a margin outside 0..MAX_EXPAND."""
    known = request_fields()
    mode = (inpaint_mode or "").strip().lower() or Features.inpaint_mode
    margins = [int(v) for v in expand] if expand is not None and any(expand) else None
    known["inpaint_mode"].check(mode)  # a FieldError (a ValueError) names the field
    if margins is not None:
        known["expand"].check(margins)
    return Features(loras=match_loras(parse_loras(loras or ""), available_loras),
                    control_model=(control_model or "").strip() or None, control_strength=float(control_strength),
                    variation_seed=int(variation_seed) if variation_seed is not None and variation_seed >= 0 else None,
                    variation_strength=float(variation_strength), refiner=bool(refiner),
                    refiner_switch=float(refiner_switch), hires="auto" if second_pass else "off",
                    hires_strength=float(hires_strength) if hires_strength and hires_strength > 0 else None,
                    exact_size=bool(exact_size), inpaint_mode=mode, expand=margins)


@dataclass
class FeaturePlan(PlannedRequest):
    """A ``PlannedRequest`` that may carry the ControlNet guide (attachment ``control``)."""

    control: Image | None = None


def apply_features(planned: PlannedRequest, features: Features, control: Image | None = None) -> FeaturePlan:
    """Set the request's feature fields (each ``Features`` field is the request field of its name). With a
    control model, ``control`` (see ``sketch_guide``) must cover exactly what ``image`` covers (text to
    image: the requested width x height)."""
    for f in fields(Features):
        setattr(planned.request, f.name, getattr(features, f.name))
    base = {name: getattr(planned, name) for name in PlannedRequest.__dataclass_fields__}
    return FeaturePlan(**base, control=control if features.control_model else None)


_INVERT = bytes(range(255, -1, -1))


def is_dark_on_light(rgba: bytes, samples: int = 4096) -> bool:
    """Whether a sketch is drawn dark on a light ground: the mean luma of up to ``samples``
    evenly spread pixels, transparent ones counted as white paper, is above the middle."""
    count = len(rgba) // 4
    if not count:
        return False
    step = max(1, count // samples)
    total = n = 0
    for i in range(0, count * 4, step * 4):
        r, g, b, a = rgba[i : i + 4]
        luma = (299 * r + 587 * g + 114 * b) // 1000
        total += (luma * a + 255 * (255 - a)) // 255
        n += 1
    return total / n > 127.5


def sketch_guide(rgba: bytes, invert: bool | None = None) -> tuple[bytes, bool]:
    """A canvas as a ControlNet guide: white lines on black (what scribble / line-art / canny
    ControlNets expect). ``invert`` None decides by ``is_dark_on_light``. Returns the RGBA and
    whether it was inverted. Inverting keeps alpha: the server lays the guide over black, which
    for an inverted sketch is the same as flattening it on white paper and then inverting."""
    if invert is None:
        invert = is_dark_on_light(rgba)
    if not invert:
        return bytes(rgba), False
    out = bytearray(rgba)
    for channel in range(3):
        out[channel::4] = rgba[channel::4].translate(_INVERT)
    return bytes(out), True


def plan_upscale(rgba: bytes, width: int, height: int, params: Params, factor: int,
                 x: int = 0, y: int = 0, upscaler: str = "") -> PlannedRequest:
    """A tiled-upscale request (docs/features.md) for ``rgba`` (``width`` x ``height``, at x, y in the
    document). ``params.strength`` is the refine strength: 0 = the plain upscale; a slider at 1.0 asks for
    0.99 (the protocol's own 1.0 would mean its default, 0.35). ``upscaler``: an id of ``upscaler_choices``
    ("" = Lanczos)."""
    values = {f.name: getattr(params, f.name) for f in fields(Params)}  # each the request field of its name
    request = GenerateRequest(job=new_job_id(), **{**values, "strength": min(params.strength, 0.99)}, x=x, y=y,
                              upscale=factor, upscaler=upscaler.strip() or None)
    return PlannedRequest(IMG2IMG, request, Image.rgba(width, height, rgba))


LANCZOS_LABEL = "Lanczos (no model)"


def upscaler_choices(welcome: dict | None) -> list[tuple[str, str]]:
    """What resizes before an upscale's refine, for a plugin's list: ``(label, upscaler id)``, Lanczos (``""``)
    first, then the server's upscaler models (``welcome.upscalers``) labelled with their scale when known."""
    items = [(LANCZOS_LABEL, "")]
    for entry in (welcome or {}).get("upscalers") or []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            scale = entry.get("scale")
            items.append((f"{entry['id']} (×{scale})" if isinstance(scale, int) else entry["id"], entry["id"]))
    return items


def feature_choices(welcome: dict | None, model: str | None = None) -> dict:
    """What a plugin's dialog offers from a server's ``welcome``: models (ids, default), LoRAs (those
    of ``model``'s family when the server says which fit it; None/"" = the default model), control
    models, whether a refiner is configured, ``refiner_models``: the ids of the models whose ``features``
    list ``refiner`` (the client asks the features, never family names), and the upscaler models' ids. Empty
    lists: hide that control."""
    welcome = welcome or {}
    models, default = model_choices(welcome)
    loras = list(welcome.get("loras") or [])
    entry = next((m for m in welcome.get("models", []) if isinstance(m, dict) and m.get("id") == (model or default)),
                 None)
    if entry is not None and isinstance(entry.get("loras"), list):
        loras = [name for name in loras if name in entry["loras"]]
    supports = model_features(entry)
    return {"models": models, "default_model": default, "loras": loras if "loras" in supports else [],
            "control_models": list(welcome.get("control_models") or []) if "control_model" in supports else [],
            "refiner": bool(welcome.get("refiner")) and "refiner" in supports,
            "negative_prompt": "negative_prompt" in supports, "variations": "variation_seed" in supports,
            "scheduler": "scheduler" in supports, "family": (entry or {}).get("family"),
            "refiner_models": [m["id"] for m in welcome.get("models", [])
                               if isinstance(m, dict) and "refiner" in model_features(m)],
            "upscalers": [upscaler for _, upscaler in upscaler_choices(welcome)[1:]]}


ALL_FEATURES = ("negative_prompt", "scheduler", "loras", "control_model", "variation_seed", "refiner")


def model_features(entry: dict | None) -> set[str]:
    """The request fields a welcome's model entry supports; servers that do not say (older ones): all."""
    listed = (entry or {}).get("features")
    return set(listed) if isinstance(listed, list) else set(ALL_FEATURES)


def fit_to_model(request: GenerateRequest, welcome: dict | None) -> GenerateRequest:
    """``request`` without the settings its model cannot use (a stored negative prompt on FLUX.1, a
    sketch ControlNet on SD3, control layers for a model whose welcome entry lists no control kinds, ...): a
    hidden control never turns into a server error (send ``fit_attachments`` with it). ``refiner`` is
    left as asked: it is an explicit switch both editors send only while their control is shown, so a
    script that asks for it on a model without one gets the server's clear error, not silence."""
    welcome = welcome or {}
    model = request.model or welcome.get("default_model")
    entry = next((m for m in welcome.get("models", []) if isinstance(m, dict) and m.get("id") == model), None)
    supports = model_features(entry)
    if "negative_prompt" not in supports:
        request.negative_prompt = ""
    if "scheduler" not in supports:
        request.scheduler = None
    if "loras" not in supports:
        request.loras = None
    if "control_model" not in supports:
        request.control_model = None
    if "variation_seed" not in supports:
        request.variation_seed = None
    if "regions" not in supports:  # ALL_FEATURES leaves it out: a server that lists no features has none
        request.regions = None
    if isinstance(entry, dict) and entry.get("controls") == []:  # an older server's welcome without the key: kept
        request.controls = None
    return request


def fit_attachments(request: GenerateRequest, attachments: dict[str, Image] | None) -> dict[str, Image]:
    """``attachments`` less those ``request`` no longer names (after ``fit_to_model`` dropped their list):
    the server refuses an attachment nothing names."""
    named = set(attachment_names(request))
    return {name: image for name, image in (attachments or {}).items() if name in named}


def result_record(result: Result, index: int = 0) -> dict:
    """What a result layer keeps about its origin (e.g. as a GIMP parasite / Krita annotation):
    the job id (for ``fetch``), its seed and the parameters the server used."""
    return {"job": result.job, "seed": result.images[index].seed if result.images else None,
            "parameters": result.parameters}


def fetch_history(client: Client, limit: int = 30) -> list[dict]:
    """Recent stored results, newest first (``job``, ``created``, ``parameters``, ``images``)."""
    client.send({"type": ClientMessage.HISTORY, "limit": int(limit)})
    for event in client.events():
        if event.type == "history":
            return list(event.data.get("jobs", []))
        if event.type == "error" and event.job is None:
            raise ClientError(event.data.get("message", "the server refused the history request"))
    raise ClientError("connection closed before the history arrived")


def fetch_result(client: Client, job: str, on_progress: Callable[[ProgressInfo], None] | None = None) -> Result:
    """A stored result by job id (a running job's result is awaited). JobFailed when unknown."""
    client.send({"type": ClientMessage.FETCH, "job": job})
    return client.wait_for(job, on_progress, reported=("progress",),
                           closed="connection closed before the result arrived")


def history_label(entry: dict) -> str:
    """One line for a history list: time, mode, prompt, seed, size, image count."""
    import time

    p = entry.get("parameters", {})
    images = entry.get("images", [])
    when = time.strftime("%m-%d %H:%M", time.localtime(entry.get("created", 0)))
    prompt = " ".join(str(p.get("prompt", "")).split()) or "(no prompt)"
    prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
    seeds = p.get("seeds") or [i.get("seed") for i in images]
    size = f"{images[0]['width']}×{images[0]['height']}" if images and "width" in images[0] else ""
    mode = p.get("mode", "") + (f" ×{p['upscale']}" if p.get("upscale") else "") + (
        " + 2nd pass" if p.get("second_pass") else "")
    parts = [when, mode, prompt, f"seed {seeds[0]}" if seeds else "", size,
             f"{len(images)} images" if len(images) > 1 else ""]
    return " · ".join(x for x in parts if x)


def params_from_history(entry: dict) -> tuple[Params, Features]:
    """A history entry's (or result's) parameters as UI values, to run the same job again; a value its
    declaration does not allow (e.g. scheduler "default") keeps the UI default."""
    p = entry.get("parameters", {})
    seeds = p.get("seeds") or [-1]
    p = {**p, "seed": seeds[0], "batch": len(seeds)}
    return Params(**{"prompt": "", **declared_values(Params, p)}), Features(**declared_values(Features, p))
