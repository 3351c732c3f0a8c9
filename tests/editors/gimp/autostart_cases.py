# Runs inside GIMP 3 (python-fu-eval batch interpreter) for tests/editors/test_gimp_autostart.py.
# No server runs at the spec's URL: each case sets the plug-in's server settings in easel-gimp.json
# (as the dialog's Local server part saves them), calls an Easel procedure NONINTERACTIVE and records
# its status, message, duration and the layers it added. The host test judges.
import json
import os
import sys
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

SPEC = json.load(open(os.environ["EASEL_TEST_SPEC"]))
SETTINGS = os.path.join(Gimp.directory(), "easel-gimp.json")
RECORDED = json.load(open(SETTINGS))  # what `easel install-plugin gimp --serve-args …` wrote


def settings(**changes):
    data = dict(RECORDED, **changes)
    with open(SETTINGS, "w") as fh:
        json.dump(data, fh)


def image_with_selection(width, height, box):
    image = Gimp.Image.new(width, height, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "Sketch", width, height, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, width, height), "R'G'B'A u8", bytes([200, 170, 140, 255]) * (width * height))
    buf.flush()
    if box:
        image.select_rectangle(Gimp.ChannelOps.REPLACE, *box)
    return image


def call(name, image, args):
    proc = Gimp.get_pdb().lookup_procedure(name)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", list(image.get_selected_layers()))
    for key, value in args.items():
        cfg.set_property(key, value)
    t0 = time.monotonic()
    rv = proc.run(cfg)
    out = {"status": rv.index(0).value_nick, "seconds": round(time.monotonic() - t0, 2)}
    if rv.length() > 1 and out["status"] != "success":
        out["message"] = str(rv.index(1))
    return out


results = {"gimp": Gimp.version(), "python": sys.version.split()[0], "pid": os.getpid(), "cases": []}
for case in SPEC["cases"]:
    res = {"name": case["name"]}
    try:
        settings(**case.get("settings", {}))
        image = image_with_selection(SPEC["width"], SPEC["height"], case.get("selection"))
        before = [layer.get_name() for layer in image.get_layers()]
        res.update(call(case["procedure"], image, case["args"]))
        res["layers"] = [{"name": lay.get_name(), "size": [lay.get_width(), lay.get_height()],
                          "offsets": list(lay.get_offsets()[1:])}
                         for lay in image.get_layers() if lay.get_name() not in before]
        image.delete()
    except Exception:
        res["error"] = traceback.format_exc()
    results["cases"].append(res)
    json.dump(results, open(os.path.join(SPEC["out"], "results.json"), "w"), indent=1)
settings()  # leave the recorded settings as they were
print("EASEL-AUTOSTART-DONE", len(results["cases"]))
