# Runs inside GIMP 3 (python-fu-eval batch interpreter, which has imported Gimp, Gegl, GLib, Gio,
# GObject and sys). It builds test images from raw pixel files the host test wrote, calls the
# Easel procedures through the PDB NONINTERACTIVE and records what happened as JSON and raw
# pixel files in the spec's "out" folder. The host test (tests/editors/test_gimp.py) judges.
import hashlib
import json
import os
import sys
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

FMT, MASK = "R'G'B'A u8", "Y u8"
SPEC = json.load(open(os.environ["EASEL_TEST_SPEC"]))
IN, OUT = SPEC["in"], SPEC["out"]


def read(drawable, fmt=FMT):
    w, h = drawable.get_width(), drawable.get_height()
    return bytes(drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE))


def write(drawable, data, fmt=FMT):
    w, h = drawable.get_width(), drawable.get_height()
    buf = drawable.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), fmt, data)
    buf.flush()
    drawable.update(0, 0, w, h)


def build(spec):
    image = Gimp.Image.new(spec["width"], spec["height"], Gimp.ImageBaseType.RGB)
    for lay in spec["layers"]:  # bottom first
        layer = Gimp.Layer.new(image, lay["name"], lay["w"], lay["h"], Gimp.ImageType.RGBA_IMAGE, 100.0,
                               Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, None, 0)
        layer.set_offsets(lay["x"], lay["y"])
        write(layer, open(os.path.join(IN, lay["file"]), "rb").read())
        layer.set_visible(lay.get("visible", True))
    if spec.get("selection"):
        write(image.get_selection(), open(os.path.join(IN, spec["selection"]), "rb").read(), MASK)
    if spec.get("precision"):  # e.g. "U16_LINEAR": the plug-in must convert to and from 8-bit sRGB
        image.convert_precision(getattr(Gimp.Precision, spec["precision"]))
    if spec.get("active"):
        image.set_selected_layers([lay for lay in image.get_layers() if lay.get_name() == spec["active"]])
    return image


def snapshot(image):
    layers = []
    for layer in image.get_layers():
        _ok, x, y = layer.get_offsets()
        layers.append({"id": layer.get_id(), "name": layer.get_name(), "x": x, "y": y, "w": layer.get_width(),
                       "h": layer.get_height(), "visible": layer.get_visible(), "opacity": layer.get_opacity(),
                       "sha": hashlib.sha256(read(layer)).hexdigest(), "tattoo": layer.get_tattoo(),
                       "control": parasite(layer, "easel-control"), "region": parasite(layer, "easel-region")})
    sel = hashlib.sha256(read(image.get_selection(), MASK)).hexdigest()
    return {"size": [image.get_width(), image.get_height()], "precision": image.get_precision().value_nick,
            "layers": layers, "selection": sel}


def call(name, image, drawables, args):
    proc = Gimp.get_pdb().lookup_procedure(name)
    if proc is None:
        return {"status": "missing procedure " + name}
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", drawables)
    for key, value in args.items():
        cfg.set_property(key, value)
    rv = proc.run(cfg)
    out = {"status": rv.index(0).value_nick}
    if rv.length() > 1:
        value = rv.index(1)
        if isinstance(value, Gimp.Image):  # easel-upscale returns the new image
            out["new_image"] = value
        elif isinstance(value, Gimp.Layer):  # easel-make-control-layer returns the new layer
            out["returned_tattoo"] = value.get_tattoo()
        else:
            out["message"] = str(value)
    return out


def parasite(layer, name):
    """A JSON parasite of the plug-in's, decoded (None when the layer has none)."""
    found = layer.get_parasite(name)
    return json.loads(bytes(found.get_data()).decode()) if found is not None else None


def record(layer):
    """The plug-in's easel-parameters parasite of a result layer (job id, seed, parameters)."""
    return parasite(layer, "easel-parameters")


def prepare(image, case):
    """Run the case's ``marks`` (procedure calls on one named layer each, e.g. easel-control-layer), then,
    with ``reload_xcf``, save the image as XCF and go on with the image loaded back from that file."""
    for step in case.get("marks", []):
        layer = next(lay for lay in image.get_layers() if lay.get_name() == step["layer"])
        done = call(step["procedure"], image, [layer], step["args"])
        if done["status"] != "success":
            raise RuntimeError(f"{step}: {done}")
    if not case.get("reload_xcf"):
        return image
    path = Gio.File.new_for_path(os.path.join(OUT, case["name"] + ".xcf"))
    Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, path, None)
    image.delete()
    return Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, path)


def dump_layers(image, name, old_ids=()):
    """Write the layers not in ``old_ids`` as raw RGBA files; their snapshot entries with file and record."""
    snap = snapshot(image)
    out = []
    for i, layer in enumerate(x for x in image.get_layers() if x.get_id() not in old_ids):
        path = os.path.join(OUT, f"{name}-layer{i}.rgba")
        open(path, "wb").write(read(layer))
        info = next(lay for lay in snap["layers"] if lay["id"] == layer.get_id())
        out.append({**info, "file": os.path.basename(path), "record": record(layer)})
    return out


def run_case(case):
    res = {"name": case["name"]}
    image = prepare(build(case["image"]), case) if case.get("image") else None
    if image is not None:
        res["before"] = snapshot(image)
        drawables = [lay for lay in image.get_layers() if lay.get_name() in case["drawables"]] \
            if "drawables" in case else list(image.get_selected_layers())
    else:
        drawables = []
    res.update(call(case["procedure"], image, drawables, case["args"]))
    new_image = res.pop("new_image", None)
    if new_image is not None:
        res["new_image"] = dict(snapshot(new_image), layers=dump_layers(new_image, case["name"] + "-new"))
        new_image.delete()
    if image is not None:
        res["after"] = snapshot(image)
        res["new_layers"] = dump_layers(image, case["name"], {lay["id"] for lay in res["before"]["layers"]})
        image.delete()
    return res


results = {"gimp": Gimp.version(), "python": sys.version, "cases": []}
for case in SPEC["cases"]:
    try:
        results["cases"].append(run_case(case))
    except Exception:
        results["cases"].append({"name": case["name"], "error": traceback.format_exc()})
    json.dump(results, open(os.path.join(OUT, "results.json"), "w"), indent=1)
print("EASEL-BATCH-DONE", len(results["cases"]))
