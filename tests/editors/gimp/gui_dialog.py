# Runs inside the GIMP 3 GUI (python-fu-eval batch interpreter) under Xvfb: opens an image in a
# window and runs the Easel procedure of each entry of the spec's "runs" INTERACTIVE, so its
# dialog appears each time (GIMP fills it with the last values, if any, over the args given). The host test takes screenshots and presses OK / Escape; this
# script records each outcome (out/gui_result<i>.json) and quits GIMP.
import json
import os
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

SPEC = json.load(open(os.environ["EASEL_TEST_SPEC"]))
OUT = SPEC["out"]
image = None


def run(name, args):
    res = {}
    proc = Gimp.get_pdb().lookup_procedure(name)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", image.get_layers()[-1:])
    for key, value in args.items():
        cfg.set_property(key, value)
    rv = proc.run(cfg)
    res["status"] = rv.index(0).value_nick
    if rv.length() > 1:
        value = rv.index(1)
        if isinstance(value, Gimp.Image):  # easel-upscale's new image
            res["new_image"] = {"size": [value.get_width(), value.get_height()], "layers": len(value.get_layers())}
        else:
            res["message"] = str(value)
    res["images"] = len(Gimp.get_images())
    res["layers"] = []
    for lay in image.get_layers():
        _ok, x, y = lay.get_offsets()
        parasite = lay.get_parasite("easel-parameters")
        record = json.loads(bytes(parasite.get_data()).decode()) if parasite is not None else None
        res["layers"].append({"name": lay.get_name(), "x": x, "y": y, "w": lay.get_width(), "h": lay.get_height(),
                              "record": record})
    return res


try:
    W, H = 320, 240
    image = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "Sketch", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    layer.fill(Gimp.FillType.WHITE)
    layer.get_buffer().set(Gegl.Rectangle.new(100, 60, 120, 120), "R'G'B'A u8", bytes((200, 40, 40, 255)) * 14400)
    layer.update(0, 0, W, H)
    Gimp.Display.new(image)
    Gimp.displays_flush()
    for i, spec in enumerate(SPEC["runs"]):
        try:
            result = run(spec["procedure"], spec["args"])
        except Exception:
            result = {"error": traceback.format_exc()}
        json.dump(result, open(os.path.join(OUT, f"gui_result{i}.json"), "w"), indent=1)
except Exception:
    json.dump({"error": traceback.format_exc()}, open(os.path.join(OUT, "gui_result0.json"), "w"), indent=1)
quit_proc = Gimp.get_pdb().lookup_procedure("gimp-quit")
quit_cfg = quit_proc.create_config()
quit_cfg.set_property("force", True)
quit_proc.run(quit_cfg)
