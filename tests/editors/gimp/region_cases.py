"""Host side of the GIMP region tests: an image with a background and two region layers (paint on the left
half and on the right half), the batch cases that mark them with Use as Region… and generate with them, and
the reference: the same request built here by ``editing.build_request`` over the known pixels and sent
straight to the server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from control_cases import ArrayDoc
from gimp_cases import H, W

from easel.client import editing
from easel.client.connection import Client

XL = "tiny-sdxl"  # the server's second model (tests/helpers/tiny_models.build_tiny_sdxl's folder name)
# what Use as Region is called with for each layer (the procedure's arguments), top layer first
MARKS = {"Right": {"prompt": "a blue pear", "negative-prompt": "green"}, "Left": {"prompt": "a red apple"}}
GOOD = {"generate": ("easel-generate", dict(prompt="fruit on a table", seed=11)),
        "generate-xl": ("easel-generate", dict(prompt="fruit on a table", seed=11, model=XL)),
        "sketch": ("easel-image-from-sketch", dict(prompt="fruit on a table", strength=0.7, seed=5)),
        "generate-plain": ("easel-generate", dict(prompt="fruit on a table", seed=11, **{"region-layers": False}))}


def layers() -> list[dict]:
    """Bottom to top: an opaque background, opaque paint on the left half, opaque paint on the right half
    (alpha only 0 or 255, so compositing here needs no blending)."""
    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.dstack([xx * 255 // (W - 1), np.full((H, W), 90), yy * 255 // (H - 1), np.full((H, W), 255)])
    half = W // 2
    left = np.dstack([np.full((H, half), 200), np.full((H, half), 30), np.full((H, half), 30),
                      np.full((H, half), 255)])
    right = np.dstack([np.full((H, W - half), 30), np.full((H, W - half), 40), np.full((H, W - half), 210),
                       np.full((H, W - half), 255)])
    return [dict(name="Background", x=0, y=0, px=bg), dict(name="Left", x=0, y=0, px=left),
            dict(name="Right", x=half, y=0, px=right)]


def image_spec(folder: Path) -> dict:
    specs = []
    for lay in layers():
        (folder / f"r-{lay['name']}.rgba").write_bytes(lay["px"].astype(np.uint8).tobytes())
        h, w = lay["px"].shape[:2]
        specs.append(dict(name=lay["name"], file=f"r-{lay['name']}.rgba", x=lay["x"], y=lay["y"], w=w, h=h))
    return dict(width=W, height=H, layers=specs, active="Background")


MARK_STEPS = [dict(layer=name, procedure="easel-region-layer", args=args) for name, args in MARKS.items()]


def region_cases(folder: Path, url: str) -> list[dict]:
    plain = image_spec(folder)
    steps = dict(steps=3, url=url)
    # "generate" is saved as XCF and loaded back first: the marks travel in the file
    return [*(dict(name=name, procedure=procedure, image=plain, marks=MARK_STEPS, reload_xcf=name == "generate",
                   args=dict(args, **steps)) for name, (procedure, args) in GOOD.items()),
            dict(name="use-no-prompt", procedure="easel-region-layer", image=plain, drawables=["Left"],
                 args={"prompt": "  "}),
            dict(name="unmark", procedure="easel-region-layer", image=plain, marks=MARK_STEPS, drawables=["Right"],
                 args={"enabled": False})]


class RegionDoc(ArrayDoc):
    """``editing.Document`` over the region image's known layers (ids: their names)."""

    def __init__(self):
        self.layers = {lay["name"]: lay for lay in layers()}
        self.mask = None


def marked(names=tuple(MARKS)) -> list[editing.RegionLayer]:
    """The region layers as Use as Region made them, top to bottom (as the plug-in lists them)."""
    return [editing.RegionLayer(name, MARKS[name]["prompt"], MARKS[name].get("negative-prompt", ""))
            for name in names]


def direct(name: str, url: str):
    """What the server returns for case ``name``'s request sent straight with the shared client."""
    procedure, args = GOOD[name]
    strength = 1.0 if procedure == "easel-generate" else args["strength"]
    params = editing.params_from_ui(args["prompt"], "", strength, 3, -1.0, args["seed"], 1, args.get("model", ""))
    features = editing.features_from_ui("", -1, 0.0, "", 1.0, False)
    regions = marked() if args.get("region-layers", True) else []
    planned = editing.build_request(RegionDoc(), params, features, use_selection=False, regions=regions)
    with Client(url, image_format="rgba", timeout=60) as client:
        return client.generate(planned.request, planned.image, planned.mask, attachments=planned.attachments)
