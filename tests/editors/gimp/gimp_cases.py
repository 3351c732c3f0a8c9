"""Host side of the GIMP tests: the test image, the batch cases, and what the server returns when
asked directly (the reference each plug-in result must equal), plus small helpers.

The image is W x H; ``composite()`` is what GIMP shows of it, ``selection()`` its soft selection.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

from easel.client import editing
from easel.client.connection import Client
from easel.client.protocol import Image

W, H = 96, 80
SEL_BOX = (20, 16, 48, 40)
PROCS = {"generate": "easel-generate", "sketch": "easel-image-from-sketch", "selection": "easel-regenerate-selection",
         "upscale": "easel-upscale", "history": "easel-history"}


# ----------------------------------------------------------------------------- test image
def layers() -> list[dict]:
    """Bottom to top: an opaque gradient background, an opaque patterned 'ink' layer at an
    offset, and a hidden magenta layer that must not reach the composite."""
    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.dstack([xx * 255 // (W - 1), yy * 255 // (H - 1), np.full((H, W), 180), np.full((H, W), 255)])
    iy, ix = np.mgrid[0:24, 0:40]
    ink = np.dstack([np.full((24, 40), 20), (ix * 6) % 256, np.where((ix // 4 + iy // 4) % 2, 200, 60),
                     np.full((24, 40), 255)])
    hidden = np.dstack([np.full((H, W), 255), np.zeros((H, W)), np.full((H, W), 255), np.full((H, W), 255)])
    return [dict(name="Background", x=0, y=0, px=bg), dict(name="Ink", x=30, y=20, px=ink),
            dict(name="Hidden", x=0, y=0, px=hidden, visible=False)]


def composite() -> np.ndarray:
    """What GIMP shows: opaque visible layers pasted in order (no blending needed)."""
    out = np.zeros((H, W, 4), np.uint8)
    for lay in layers():
        if lay.get("visible", True):
            h, w = lay["px"].shape[:2]
            out[lay["y"]:lay["y"] + h, lay["x"]:lay["x"] + w] = lay["px"]
    return out


def selection() -> np.ndarray:
    """A soft selection: 60 at the box edge rising by 16 per pixel inwards to 255, 0 outside."""
    x, y, w, h = SEL_BOX
    yy, xx = np.mgrid[0:h, 0:w]
    depth = np.minimum(np.minimum(xx, w - 1 - xx), np.minimum(yy, h - 1 - yy))
    mask = np.zeros((H, W), np.uint8)
    mask[y:y + h, x:x + w] = np.minimum(255, 60 + 16 * depth)
    return mask


def image_spec(folder: Path, with_selection: bool) -> dict:
    """Write the layers (and selection) as raw files into ``folder``; the spec batch_cases.py builds from."""
    specs = []
    for lay in layers():
        name = f"{lay['name']}.rgba"
        (folder / name).write_bytes(lay["px"].astype(np.uint8).tobytes())
        h, w = lay["px"].shape[:2]
        specs.append(dict(name=lay["name"], file=name, x=lay["x"], y=lay["y"], w=w, h=h,
                          visible=lay.get("visible", True)))
    spec = dict(width=W, height=H, layers=specs, active="Ink")
    if with_selection:
        (folder / "selection.gray").write_bytes(selection().tobytes())
        spec["selection"] = "selection.gray"
    return spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- cases
# the successful cases: name -> (procedure kind, arguments besides steps and url)
GOOD = {"generate": ("generate", dict(prompt="a red circle", seed=1234, batch=2)),
        "sketch": ("sketch", dict(prompt="a blue square", strength=0.5, seed=99)),
        "selection": ("selection", dict(prompt="a green triangle", strength=1.0, seed=7)),
        # power features (docs/features.md): the LoRA named without .safetensors, as painters type it
        "features": ("generate", dict(prompt="a red circle", seed=1234, loras="ink:0.7", **{
            "variation-seed": 5, "variation-strength": 0.4})),
        # the second pass and exact size (docs/imaging.md): the arguments reach the server
        "sizes": ("sketch", dict(prompt="a blue square", strength=0.5, seed=99, **{
            "hires": False, "hires-strength": 0.3, "exact-size": True})),
        "upscale": ("upscale", dict(prompt="crisp", factor=2, strength=0.3, seed=11)),
        "control": ("selection", dict(prompt="a green triangle", strength=1.0, seed=7, **{
            "control-model": "scribble", "control-strength": 0.9}))}
LORAS = {"ink.safetensors"}  # what the test server offers (tests/editors/test_gimp.py)


def args_of(name: str, url: str) -> dict:
    return dict(GOOD[name][1], steps=3, url=url)


def batch_cases(folder: Path, url: str) -> list[dict]:
    args = dict(steps=3, url=url)
    plain, selected = image_spec(folder, False), image_spec(folder, True)
    good = [dict(name=name, procedure=PROCS[kind], image=selected if kind == "selection" else plain,
                 args=args_of(name, url)) for name, (kind, _a) in GOOD.items()]
    return [
        *good,
        # right after "control": the newest stored result is the control case's
        dict(name="history", procedure=PROCS["history"], image=plain, args=dict(job="", url=url)),
        dict(name="sketch-16bit", procedure=PROCS["sketch"], image=dict(plain, precision="U16_LINEAR"),
             args=args_of("sketch", url)),
        dict(name="server-down", procedure=PROCS["generate"], image=plain,
             args=dict(prompt="x", url=f"ws://127.0.0.1:{free_port()}")),
        dict(name="bad-model", procedure=PROCS["sketch"], image=plain,
             args=dict(args, prompt="x", model="no-such-model")),
        dict(name="no-selection", procedure=PROCS["selection"], image=plain, args=dict(args, prompt="x")),
        dict(name="no-image", procedure=PROCS["generate"], image=None, args=dict(args, prompt="x")),
        dict(name="bad-lora", procedure=PROCS["generate"], image=plain, args=dict(args, prompt="x", loras="nope:1")),
        dict(name="bad-lora-text", procedure=PROCS["sketch"], image=plain,
             args=dict(args, prompt="x", loras="ink:lots")),
        dict(name="no-refiner", procedure=PROCS["generate"], image=plain, args=dict(args, prompt="x", refiner=True)),
        dict(name="bad-factor", procedure=PROCS["upscale"], image=plain, args=dict(args, factor=3)),
        dict(name="history-unknown", procedure=PROCS["history"], image=plain, args=dict(job="no-such-job", url=url)),
    ]


# ----------------------------------------------------------------------------- the reference
def planned_directly(name: str, url: str) -> editing.PlannedRequest:
    """The request the plug-in should have sent for case ``name``, built here from the known image."""
    kind, _ = GOOD[name]
    args = args_of(name, url)
    strength = args.get("strength", 1.0) if kind != "generate" else 1.0
    params = editing.params_from_ui(args["prompt"], "", strength, args["steps"], -1.0, args["seed"],
                                    args.get("batch", 1), "")
    if kind == "upscale":
        return editing.plan_upscale(composite().tobytes(), W, H, params, args["factor"])
    state = editing.EditorState(W, H)
    region = (0, 0, W, H)
    if kind != "generate":
        mode, region = editing.read_plan(W, H, SEL_BOX if kind == "selection" else None, params.strength)
        x, y, w, h = region
        state.region, state.rgba = region, composite()[y:y + h, x:x + w].tobytes()
        if mode == editing.INPAINT:
            state.selection = selection()[y:y + h, x:x + w].tobytes()
    planned = editing.plan_request(state, params)
    features = editing.features_from_ui(args.get("loras", ""), args.get("variation-seed", -1),
                                        args.get("variation-strength", 0.0), args.get("control-model", ""),
                                        args.get("control-strength", 1.0), available_loras=sorted(LORAS),
                                        second_pass=args.get("hires", True), hires_strength=args.get("hires-strength", 0.0),
                                        exact_size=args.get("exact-size", False))
    control = None
    if features.control_model:
        x, y, w, h = region
        guide, _ = editing.sketch_guide(composite()[y:y + h, x:x + w].tobytes())
        control = Image.rgba(w, h, guide)
    return editing.apply_features(planned, features, control)


def direct(name: str, url: str):
    """Ask the server straight through the shared client what the plug-in should have asked."""
    planned = planned_directly(name, url)
    with Client(url, image_format="rgba", timeout=60) as client:
        return client.generate(planned.request, planned.image, planned.mask, control=getattr(planned, "control", None))


# ----------------------------------------------------------------------------- GUI helpers
def geometry(xwininfo: str) -> tuple[int, int, int, int]:
    """(x, y, width, height) of a window from ``xwininfo -id`` output."""
    values = {}
    for line in xwininfo.splitlines():
        key, _, value = line.strip().partition(":")
        values[key] = value.strip()
    return (int(values["Absolute upper-left X"]), int(values["Absolute upper-left Y"]), int(values["Width"]),
            int(values["Height"]))
