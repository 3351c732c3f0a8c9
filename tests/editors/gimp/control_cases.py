"""Host side of the GIMP control-layer tests: an image with a background and two control layers (line art
and depth), the batch cases that mark them and generate with them, and the reference: the same request
built here by ``editing.build_request`` over the known pixels and sent straight to the server.

The depth layer is opaque and covers the whole image, so a canvas that wrongly kept it would show
the depth ramp instead of the background. The reference cases add a hidden picture smaller than the image
(``REF``), marked as a style reference: sent whole, at its own size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gimp_cases import SEL_BOX, H, W, selection

from easel.client import editing
from easel.client.connection import Client
from easel.client.protocol import Image

MADE = ("lineart", "depth")  # guides the server's (tiny) models make: line art, depth
XL = "tiny-sdxl"  # the server's second model (tests/helpers/tiny_models.build_tiny_sdxl's folder name)
LINE_BOX = (10, 12, 60, 50)  # the line-art layer: smaller than the image, at an offset
# what Use as Control Layer is called with for each layer (the procedure's arguments)
REF = dict(name="Ref", x=60, y=30, w=24, h=18)  # the style reference's layer: hidden, smaller, at an offset
REF_MARK = dict(kind="style", strength=0.7, start=0.3, end=0.6)  # Start/End do not apply: stored as 0-1
MARKS = {"Lines": dict(kind="lineart", strength=0.8, start=0.0, end=1.0),  # steers every step: image from
         # sketch at strength 0.6 runs one of 3 steps, and a layer that stops before the end would miss it
         "Depth": dict(kind="depth", strength=0.6, start=0.1, end=1.0)}
GOOD = {"generate": ("easel-generate", dict(prompt="a red circle", seed=21)),
        "sketch": ("easel-image-from-sketch", dict(prompt="a blue square", strength=0.6, seed=5)),
        "sketch-unguided": ("easel-image-from-sketch", dict(prompt="a blue square", strength=0.6, seed=5,
                                                             **{"control-layers": False})),
        # the same two layers on SDXL: both kinds served by one ControlNet Union (its control_mode per layer)
        "sketch-xl": ("easel-image-from-sketch", dict(prompt="a blue square", strength=0.6, seed=5, model=XL))}


def layers(reference: bool = False) -> list[dict]:
    """Bottom to top: an opaque background, (with ``reference``, the hidden ``REF`` picture,) an opaque depth
    ramp over all of it, dark lines on transparent paper at an offset (alpha only 0 or 255, so compositing here
    needs no blending)."""
    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.dstack([xx * 255 // (W - 1), np.full((H, W), 90), yy * 255 // (H - 1), np.full((H, W), 255)])
    ramp = (xx * 255 // (W - 1)).astype(np.uint8)
    depth = np.dstack([ramp, ramp, ramp, np.full((H, W), 255)])
    x, y, w, h = LINE_BOX
    ly, lx = np.mgrid[0:h, 0:w]
    ink = (np.abs(lx - ly) < 2) | (np.abs(ly - h // 2) < 2) | (lx < 3)
    lines = np.dstack([np.full((h, w), 20)] * 3 + [np.where(ink, 255, 0)])
    ry, rx = np.mgrid[0:REF["h"], 0:REF["w"]]
    ref = np.dstack([rx * 10, 250 - ry * 12, (rx * ry) % 256, np.full(rx.shape, 255)])
    refs = [dict(name="Ref", x=REF["x"], y=REF["y"], px=ref, visible=False)] if reference else []
    return [dict(name="Background", x=0, y=0, px=bg), *refs, dict(name="Depth", x=0, y=0, px=depth),
            dict(name="Lines", x=x, y=y, px=lines)]


def image_spec(folder: Path, with_selection: bool = False, reference: bool = False) -> dict:
    specs = []
    for lay in layers(reference):
        (folder / f"c-{lay['name']}.rgba").write_bytes(lay["px"].astype(np.uint8).tobytes())
        h, w = lay["px"].shape[:2]
        specs.append(dict(name=lay["name"], file=f"c-{lay['name']}.rgba", x=lay["x"], y=lay["y"], w=w, h=h,
                          visible=lay.get("visible", True)))
    spec = dict(width=W, height=H, layers=specs, active="Background")
    if with_selection:
        (folder / "c-selection.gray").write_bytes(selection().tobytes())
        spec["selection"] = "c-selection.gray"
    return spec


MARK_STEPS = [dict(layer=name, procedure="easel-control-layer", args=args) for name, args in MARKS.items()]
REF_STEPS = [*MARK_STEPS, dict(layer="Ref", procedure="easel-control-layer", args=REF_MARK)]
SKETCH = dict(prompt="a blue square", strength=0.6, seed=5)
# the reference cases: (Image from Sketch's arguments, whether the Ref layer is still marked)
REFS = {"ref-sketch": (SKETCH, True), "ref-sketch-xl": (dict(SKETCH, model=XL), True),
        "ref-off": (SKETCH, False)}  # Use as Control Layer with the box off: an ordinary (hidden) layer again


def control_cases(folder: Path, url: str) -> list[dict]:
    plain, selected = image_spec(folder), image_spec(folder, True)
    steps = dict(steps=3, url=url)
    return [
        dict(name="generate", procedure="easel-generate", image=plain, marks=MARK_STEPS,
             args=dict(GOOD["generate"][1], **steps)),
        # saved as XCF and loaded back first: the marks travel in the file
        dict(name="sketch", procedure="easel-image-from-sketch", image=plain, marks=MARK_STEPS, reload_xcf=True,
             args=dict(GOOD["sketch"][1], **steps)),
        dict(name="sketch-unguided", procedure="easel-image-from-sketch", image=plain, marks=MARK_STEPS,
             args=dict(GOOD["sketch-unguided"][1], **steps)),
        dict(name="sketch-xl", procedure="easel-image-from-sketch", image=plain, marks=MARK_STEPS,
             args=dict(GOOD["sketch-xl"][1], **steps)),
        dict(name="make-canny", procedure="easel-make-control-layer", image=plain, marks=MARK_STEPS,
             args=dict(kind="canny", strength=0.7, url=url)),
        dict(name="make-canny-selection", procedure="easel-make-control-layer", image=selected, marks=MARK_STEPS,
             args=dict(kind="canny", strength=1.0, url=url)),
        *(dict(name=f"make-{kind}", procedure="easel-make-control-layer", image=plain, marks=MARK_STEPS,
               args=dict(kind=kind, strength=0.7, url=url)) for kind in MADE),
        *(dict(name=name, procedure="easel-image-from-sketch", image=image_spec(folder, reference=True),
               marks=REF_STEPS if on else [*REF_STEPS, dict(layer="Ref", procedure="easel-control-layer",
                                                              args=dict(kind="style", enabled=False))],
               args=dict(args, **steps)) for name, (args, on) in REFS.items()),
        dict(name="unmark", procedure="easel-control-layer", image=plain, marks=MARK_STEPS, drawables=["Depth"],
             args=dict(kind="lineart", enabled=False)),
        dict(name="use-no-layer", procedure="easel-control-layer", image=plain, drawables=[],
             args=dict(kind="depth")),
        dict(name="use-bad-range", procedure="easel-control-layer", image=plain, drawables=["Lines"],
             args=dict(kind="lineart", start=0.8, end=0.2)),
    ]


# ----------------------------------------------------------------------------- the reference
class ArrayDoc:
    """``editing.Document`` over the known layers (ids: their names) and selection."""

    def __init__(self, with_selection: bool = False, reference: bool = False):
        self.layers = {lay["name"]: lay for lay in layers(reference)}
        self.mask = selection() if with_selection else None

    def size(self) -> tuple[int, int]:
        return W, H

    def selection_box(self):
        return SEL_BOX if self.mask is not None else None

    def _placed(self, lay: dict) -> np.ndarray:
        out = np.zeros((H, W, 4), np.uint8)
        h, w = lay["px"].shape[:2]
        out[lay["y"]:lay["y"] + h, lay["x"]:lay["x"] + w] = lay["px"]
        return out

    def read_canvas(self, box, exclude=()) -> bytes:
        out = np.zeros((H, W, 4), np.uint8)
        for name, lay in self.layers.items():
            if name not in exclude and lay.get("visible", True):
                placed = self._placed(lay)
                out = np.where(placed[..., 3:] > 0, placed, out)
        return crop(out, box)

    def read_layer(self, layer: str, box) -> bytes:
        return crop(self._placed(self.layers[layer]), box)

    def layer_bounds(self, layer: str):
        lay = self.layers[layer]
        h, w = lay["px"].shape[:2]
        return lay["x"], lay["y"], w, h

    def read_selection(self, box) -> bytes:
        return crop(self.mask, box)


def crop(array: np.ndarray, box) -> bytes:
    x, y, w, h = box
    return np.ascontiguousarray(array[y:y + h, x:x + w]).astype(np.uint8).tobytes()


def marked(enabled: bool = True) -> list[editing.ControlLayer]:
    """The control layers as Use as Control Layer made them, top to bottom (as the plug-in lists them:
    Lines is the topmost layer)."""
    return [editing.ControlLayer(name, enabled=enabled, **args) for name, args in MARKS.items()]


def planned_directly(name: str) -> editing.PlannedRequest:
    if name in REFS:
        (args, on), procedure = REFS[name], "easel-image-from-sketch"
        controls = [*marked(), *([editing.controls.settings("Ref", **REF_MARK)] if on else [])]
    else:
        procedure, args = GOOD[name]
        controls = marked(args.get("control-layers", True))
    kind = "generate" if procedure == "easel-generate" else "sketch"
    strength = 1.0 if kind == "generate" else args["strength"]
    params = editing.params_from_ui(args["prompt"], "", strength, 3, -1.0, args["seed"], 1, args.get("model", ""))
    features = editing.features_from_ui("", -1, 0.0, "", 1.0, False)
    return editing.build_request(ArrayDoc(reference=name in REFS), params, features, use_selection=False,
                                 controls=controls)


def direct(name: str, url: str):
    """What the server returns for case ``name``'s request sent straight with the shared client."""
    planned = planned_directly(name)
    with Client(url, image_format="rgba", timeout=60) as client:
        return client.generate(planned.request, planned.image, planned.mask, attachments=planned.attachments)


def guide_directly(url: str, box=(0, 0, W, H), kind: str = "canny") -> Image:
    """The server's ``kind`` guide of what the image shows without its control layers, over ``box``."""
    picture = ArrayDoc().read_canvas(box, exclude=list(MARKS))
    with Client(url, image_format="rgba", timeout=60) as client:
        return client.preprocess(kind, Image.rgba(box[2], box[3], picture))
