"""Runs inside Krita through kritarunner (headless): exercises the installed plugin's document adapter.

    kritarunner -s adapter_checks -f main OUTDIR

with the plugin's install folder and this folder on PYTHONPATH. Writes OUTDIR/adapter.json:
``checks`` maps a check name to what was observed; tests/editors/test_krita.py holds the
expectations. Nothing here decides pass or fail, except that an exception is recorded.
"""

import json
import os
import struct
import sys
import traceback


def bgra(r, g, b, a=255):
    return bytes((b, g, r, a))


class WithActive:
    """A document whose active layer is ``node`` (libkis has an active layer only with a view)."""

    def __init__(self, doc, node):
        self._doc, self._node = doc, node

    def activeNode(self):  # libkis' name
        return self._node

    def __getattr__(self, name):
        return getattr(self._doc, name)


def main(args=None):
    out = (args[0] if args else None) or os.environ["EASEL_TEST_OUT"]
    os.makedirs(out, exist_ok=True)
    res = {"python": sys.version, "checks": {}, "errors": {}}
    ck = res["checks"]

    def check(name, fn):
        try:
            ck[name] = fn()
        except Exception:  # recorded for the test to show
            res["errors"][name] = traceback.format_exc()

    from krita import Krita, Selection

    app = Krita.instance()
    app.setBatchmode(True)
    res["krita_version"] = app.version()

    def new_doc(w, h, depth="U8", model="RGBA", name="easel-test"):
        doc = app.createDocument(w, h, name, model, depth, "", 72.0)
        doc.setBatchmode(True)
        return doc

    def done(doc):
        doc.refreshProjection()
        doc.waitForDone()

    def imports():
        import easel_krita
        import websockets
        from easel_krita import controller, docker, document, qt
        from easel_krita.shared import connection, editing, protocol, send_region

        return {"easel": os.path.dirname(easel_krita.__file__), "websockets": os.path.dirname(websockets.__file__),
                "websockets_version": websockets.__version__, "qt_api": qt.QT_API,
                "modules": [m.__name__ for m in (controller, docker, document, connection, editing, protocol,
                                                 send_region)],
                "extensions": [type(e).__name__ for e in app.extensions()]}

    check("imports", imports)
    from easel_krita import document
    from easel_krita.shared import editing
    from easel_krita.shared.connection import ResultImage
    from easel_krita.shared.protocol import Image

    # --- 8-bit: BGRA memory order, reading the visible canvas -------------------------------------
    def read_u8():
        doc = new_doc(64, 48)
        base = doc.rootNode().childNodes()[0]
        base.setPixelData(bgra(255, 0, 0) * (10 * 8), 5, 4, 10, 8)  # red block
        base.setPixelData(bgra(10, 20, 30) * 4, 40, 30, 2, 2)
        top = doc.createNode("top", "paintlayer")
        doc.rootNode().addChildNode(top, base)
        top.setPixelData(bgra(0, 0, 255, 128) * 4, 20, 20, 2, 2)  # half-transparent blue over white
        done(doc)
        rgba = document.read_canvas(doc, 0, 0, 64, 48)
        px = lambda x, y: list(rgba[(y * 64 + x) * 4:(y * 64 + x) * 4 + 4])  # noqa: E731
        raw = list(bytes(doc.pixelData(5, 4, 1, 1)))
        part = document.read_canvas(doc, 40, 30, 2, 2)
        return {"len": len(rgba), "red": px(6, 5), "white": px(0, 0), "custom": px(41, 31), "blend": px(20, 20),
                "raw_bgra_red": raw, "part": list(part[:4]), "part_len": len(part)}

    check("read_u8", read_u8)

    # --- selection: bounds, soft values, what read_state sends --------------------------------------
    def selection():
        doc = new_doc(200, 150)
        r = {"none_box": document.selection_box(doc), "none_state": None}
        st = document.read_state(doc, 1.0)
        r["none_state"] = [st.rgba is None, st.region, st.selection is None]
        st = document.read_state(doc, 0.5)
        r["refine_state"] = [len(st.rgba), st.region, st.selection is None]
        sel = Selection()
        sel.select(120, 90, 30, 20, 255)
        sel.select(120, 80, 10, 10, 128)  # a soft part
        doc.setSelection(sel)
        done(doc)
        r["box"] = document.selection_box(doc)
        full = document.read_selection(doc, 0, 0, 200, 150)
        r["full_bounds"] = editing.selection_bounds(full, 200, 150)
        r["values"] = sorted(set(full))
        r["count_255"] = full.count(255)
        r["count_128"] = full.count(128)
        st = document.read_state(doc, 1.0)
        r["inpaint_region"] = st.region
        x, y, w, h = st.region
        r["mask_matches_crop"] = st.selection == editing.crop_bytes(full, 200, 1, x, y, w, h)
        canvas = document.read_canvas(doc, 0, 0, 200, 150)
        r["rgba_matches_crop"] = st.rgba == editing.crop_bytes(canvas, 200, 4, x, y, w, h)
        planned = editing.plan_request(st, editing.Params(prompt="p", strength=1.0, seed=3))
        req = planned.request
        r["planned"] = {"mode": planned.mode, "x": req.x, "y": req.y, "canvas": [req.canvas_width, req.canvas_height],
                        "image": [planned.image.width, planned.image.height], "mask": planned.mask is not None}
        r["refine_with_selection_mode"] = editing.plan_request(document.read_state(doc, 0.4),
                                                               editing.Params(prompt="p", strength=0.4)).mode
        return r

    check("selection", selection)

    # --- inserting results: offsets, order, nothing else changes ------------------------------------
    def insert_u8():
        doc = new_doc(64, 48)
        root = doc.rootNode()
        base = root.childNodes()[0]
        base.setPixelData(bgra(0, 255, 0) * (64 * 48), 0, 0, 64, 48)
        upper = doc.createNode("upper", "paintlayer")
        root.addChildNode(upper, base)
        upper.setPixelData(bgra(0, 0, 255) * 4, 0, 0, 2, 2)
        doc.setActiveNode(base)
        done(doc)
        before = {n.name(): bytes(n.pixelData(0, 0, 64, 48)) for n in root.childNodes()}
        active = doc.activeNode()
        rgba = bytes(i % 256 for i in range(5 * 4 * 4))  # 5x4 pixels, every byte distinct-ish
        results = [ResultImage(Image.rgba(5, 4, rgba), 11, 7, 9), ResultImage(Image.rgba(5, 4, rgba[::-1]), 12, 30, 40)]
        # headless Krita has no view, so no active layer: a proxy makes "Background" the active one
        nodes = document.insert_results(WithActive(doc, base), results, lambda r: editing.layer_name("a cat", r.seed))
        headless = document.insert_results(doc, results[:1], lambda r: "no active layer")
        done(doc)
        first, second = nodes
        b = first.bounds()
        return {
            "names": [n.name() for n in root.childNodes()],
            "active_headless": active.name() if active is not None else None,
            "headless_on_top": root.childNodes()[-1].name() == headless[0].name(),
            "pixels_at_offset": bytes(first.pixelData(7, 9, 5, 4)) == editing.rgba_to_bgra(rgba),
            "bounds": [b.x(), b.y(), b.width(), b.height()],
            "second_offset_pixels": bytes(second.pixelData(30, 40, 5, 4)) == editing.rgba_to_bgra(rgba[::-1]),
            "others_unchanged": all(bytes(n.pixelData(0, 0, 64, 48)) == before[n.name()]
                                    for n in root.childNodes() if n.name() in before),
            "type": first.type(),
        }

    check("insert_u8", insert_u8)

    def insert_opaque_and_png():
        from PyQt5.QtCore import QBuffer, QByteArray, QIODevice
        from PyQt5.QtGui import QColor, QImage

        doc = new_doc(40, 30)
        rgba = b"".join(bytes((200, 100, 50, 255)) for _ in range(6 * 3))
        node = document.insert_layer(doc, "opaque", Image.rgba(6, 3, rgba), 1, 2)
        done(doc)
        qi = QImage(4, 2, QImage.Format.Format_ARGB32)
        qi.fill(QColor(10, 200, 30, 255))
        ba = QByteArray()
        buf = QBuffer(ba)
        buf.open(QIODevice.OpenModeFlag.WriteOnly)
        qi.save(buf, "PNG")
        buf.close()
        png_node = document.insert_layer(doc, "png", Image.png(bytes(ba)), 30, 20)
        done(doc)
        return {"canvas": list(document.read_canvas(doc, 1, 2, 1, 1)),
                "node_bgra": list(bytes(node.pixelData(1, 2, 1, 1))),
                "png_canvas": list(document.read_canvas(doc, 31, 21, 1, 1)),
                "png_bounds": [png_node.bounds().x(), png_node.bounds().y(), png_node.bounds().width(),
                               png_node.bounds().height()]}

    check("insert_opaque_and_png", insert_opaque_and_png)

    def placement_with_selection_mask():
        doc = new_doc(32, 32)
        root = doc.rootNode()
        base = root.childNodes()[0]
        sel = Selection()
        sel.select(2, 2, 8, 8, 255)
        mask = doc.createSelectionMask("Selection Mask")
        root.childNodes()[0].addChildNode(mask, None)
        mask.setSelection(sel)
        doc.setActiveNode(mask)
        done(doc)
        node = document.insert_layer(doc, "res", Image.rgba(1, 1, bytes((1, 2, 3, 255))), 0, 0)
        done(doc)
        return {"active_type": mask.type(), "parent": node.parentNode().name() == root.name(),
                "order": [n.name() for n in root.childNodes()], "base": base.name()}

    check("placement_with_selection_mask", placement_with_selection_mask)

    # --- 16-bit and float documents: converted, not refused ----------------------------------------
    def deep(depth):
        doc = new_doc(16, 12, depth)
        base = doc.rootNode().childNodes()[0]
        if depth == "U16":  # BGRA, linear profile: 0.25 blue, 0.5 green, ~0.784 red
            px = struct.pack("<4H", 16384, 32768, 51400, 65535)
        elif depth == "F16":
            px = struct.pack("<4e", 0.784, 0.5, 0.25, 1.0)  # RGBA
        else:
            px = struct.pack("<4f", 0.784, 0.5, 0.25, 1.0)
        base.setPixelData(px * 4, 1, 1, 2, 2)
        done(doc)
        read = list(document.read_canvas(doc, 1, 1, 1, 1))
        st = document.read_state(doc, 0.5)
        rgba = bytes((250, 100, 10, 255, 0, 128, 255, 255)) * 2  # 2x2
        node = document.insert_layer(doc, "deep", Image.rgba(2, 2, rgba), 8, 6)
        done(doc)
        back = document.read_canvas(doc, 8, 6, 2, 2)
        return {"profile": doc.colorProfile(), "read": read, "state_len": len(st.rgba),
                "node_space": [node.colorModel(), node.colorDepth(), node.colorProfile()],
                "roundtrip": list(back), "sent": list(rgba), "bytes_per_px": len(bytes(node.pixelData(8, 6, 1, 1)))}

    for depth in ("U16", "F16", "F32"):
        check(f"deep_{depth}", lambda depth=depth: deep(depth))

    # --- non-RGB documents get a plain message ------------------------------------------------------
    def non_rgb():
        out = {}
        for model in ("GRAYA", "CMYKA"):
            doc = new_doc(8, 8, "U8", model)
            try:
                document.read_state(doc, 1.0)
                out[model] = None
            except document.DocumentError as exc:
                out[model] = str(exc)
        try:
            document.check_document(None)
        except document.DocumentError as exc:
            out["none"] = str(exc)
        return out

    check("non_rgb", non_rgb)

    def identity():
        doc = new_doc(8, 8, name="ident")
        key = document.document_key(doc)
        return {"stable": key == document.document_key(doc), "found": document.find_document(key) is not None,
                "other": document.find_document("{00000000-0000-0000-0000-000000000000}") is None}

    check("identity", identity)

    def settings():
        from easel_krita import controller

        before = controller.load_params()
        params = editing.Params(prompt="a fox", negative_prompt="blurry", strength=0.6, steps=12, guidance=None,
                                seed=42, batch=3, model="tiny")
        controller.save_params(params)
        return {"fresh_defaults": before == editing.Params(prompt=""), "round_trip": controller.load_params() == params,
                "raw_strength": app.readSetting("easel", "strength", "")}

    check("settings", settings)

    import live_checks

    live_checks.run(check, new_doc, done, bgra)

    with open(os.path.join(out, "adapter.json"), "w") as fh:
        json.dump(res, fh, indent=1, default=str)
    print("EASEL-ADAPTER-DONE", len(ck), "checks,", len(res["errors"]), "errors")
    return 0
