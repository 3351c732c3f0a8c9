"""Live painting's Krita side, headless (called by adapter_checks.main inside kritarunner).

Records what it observes; tests/editors/test_krita.py holds the expectations.
"""


def run(check, new_doc, done, bgra):
    from easel_krita import live_layer
    from easel_krita.shared import editing
    from easel_krita.shared.protocol import Image
    from easel_krita.shared.send_region import send_region
    from krita import Selection

    def stack(doc):
        """A background, an opaque and a half-transparent normal layer, a 50% multiply layer, a hidden
        layer, a group with a child: what the canvas composition must reproduce."""
        root = doc.rootNode()
        w, h = doc.width(), doc.height()
        base = root.childNodes()[0]
        base.setPixelData(bgra(200, 180, 160) * (w * h), 0, 0, w, h)
        opaque = doc.createNode("opaque", "paintlayer")
        root.addChildNode(opaque, base)
        opaque.setPixelData(bgra(20, 40, 220) * 60, 4, 4, 10, 6)
        soft = doc.createNode("soft", "paintlayer")
        root.addChildNode(soft, opaque)
        soft.setPixelData(bgra(250, 20, 20, 128) * 48, 10, 8, 8, 6)
        mult = doc.createNode("mult", "paintlayer")
        root.addChildNode(mult, soft)
        mult.setBlendingMode("multiply")
        mult.setOpacity(128)
        mult.setPixelData(bgra(100, 200, 50) * 64, 20, 2, 8, 8)
        hidden = doc.createNode("hidden", "paintlayer")
        root.addChildNode(hidden, mult)
        hidden.setPixelData(bgra(0, 0, 0) * (w * h), 0, 0, w, h)
        hidden.setVisible(False)
        group = doc.createGroupLayer("group")
        root.addChildNode(group, hidden)
        child = doc.createNode("in group", "paintlayer")
        group.addChildNode(child, None)
        child.setPixelData(bgra(10, 250, 10) * 16, 30, 20, 4, 4)
        done(doc)
        return opaque

    def swap(data):
        return editing.bgra_to_rgba(bytes(data))

    def diff(a, b):
        return max((abs(x - y) for x, y in zip(a, b)), default=0) if len(a) == len(b) else 999

    def composition():
        doc = new_doc(40, 30)
        stack(doc)
        projection = swap(doc.pixelData(0, 0, 40, 30))
        composed = live_layer.read_without_live(doc, 0, 0, 40, 30)
        part = live_layer.read_without_live(doc, 3, 3, 12, 8)
        px = lambda data, w, x, y: list(data[(y * w + x) * 4:(y * w + x) * 4 + 4])  # noqa: E731
        return {"len": len(composed), "max_diff": diff(projection, composed),
                "opaque_px": [px(composed, 40, 5, 5), px(projection, 40, 5, 5)],
                "part_equal": part == editing.crop_bytes(composed, 40, 4, 3, 3, 12, 8),
                "multiply_px": [px(composed, 40, 22, 4), px(projection, 40, 22, 4)],
                "hidden_left_out": px(composed, 40, 1, 1) == [200, 180, 160, 255]}

    check("live_composition", composition)

    def live_layer_life():
        doc = new_doc(40, 30)
        opaque = stack(doc)
        canvas_before = live_layer.read_without_live(doc, 0, 0, 40, 30)
        layers_before = {n.name(): bytes(n.pixelData(0, 0, 40, 30)) for n in doc.rootNode().childNodes()}
        frame = bytes((9, 99, 199, 255)) * (16 * 12)
        node = live_layer.show(doc, Image.rgba(16, 12, frame), 5, 6)
        done(doc)
        first = {"name": node.name(), "locked": node.locked(), "top": doc.rootNode().childNodes()[-1].name(),
                 "visible_px": list(swap(doc.pixelData(6, 7, 1, 1))),
                 "read_ignores_it": live_layer.read_without_live(doc, 0, 0, 40, 30) == canvas_before}
        frame2 = bytes((1, 2, 3, 200)) * (10 * 10)
        node = live_layer.show(doc, Image.rgba(10, 10, frame2), 20, 15, (5, 6, 16, 12))
        done(doc)
        layer = swap(node.pixelData(0, 0, 40, 30))
        second = {"count": len(live_layer.live_layers(doc)),
                  "old_cleared": all(v == 0 for v in bytes(node.pixelData(5, 6, 15, 9))),
                  "new_px": list(swap(node.pixelData(20, 15, 1, 1))),
                  "bounds": [node.bounds().x(), node.bounds().y(), node.bounds().width(), node.bounds().height()]}
        doc.setActiveNode(opaque)
        applied = live_layer.apply(doc, editing.layer_name("a lake", 5), Image.rgba(10, 10, frame2), 20, 15)
        done(doc)
        names = [n.name() for n in doc.rootNode().childNodes()]
        apply = {"names": names, "equal": swap(applied.pixelData(0, 0, 40, 30)) == layer,
                 "type": applied.type(), "locked": applied.locked(),
                 "others_unchanged": all(bytes(n.pixelData(0, 0, 40, 30)) == layers_before[n.name()]
                                         for n in doc.rootNode().childNodes() if n.name() in layers_before)}
        stale = doc.createNode("Easel Live", "paintlayer")  # one left over (e.g. back by Undo)
        doc.rootNode().addChildNode(stale, None)
        stale.setPixelData(bytes((5, 5, 5, 255)) * 4, 0, 0, 2, 2)
        reused = live_layer.show(doc, Image.rgba(2, 2, bytes((7, 7, 7, 255)) * 4), 30, 20)
        done(doc)
        second["stale"] = {"count": len(live_layer.live_layers(doc)),
                           "cleared": bytes(reused.pixelData(20, 15, 10, 5)) == bytes(10 * 5 * 4),
                           "new": bytes(reused.pixelData(30, 20, 2, 2)) == bytes((7, 7, 7, 255)) * 4}
        removed = live_layer.remove(doc)
        done(doc)
        return {"first": first, "second": second, "apply": apply, "removed": removed,
                "after": [n.name() for n in doc.rootNode().childNodes()]}

    check("live_layer", live_layer_life)

    def live_state():
        doc = new_doc(200, 150)
        doc.rootNode().childNodes()[0].setPixelData(bgra(50, 60, 70) * (200 * 150), 0, 0, 200, 150)
        done(doc)
        whole = live_layer.read_live_state(doc, 0.5)
        txt = live_layer.read_live_state(doc, 1.0)
        sel = Selection()
        sel.select(120, 80, 30, 30, 255)
        doc.setSelection(sel)
        done(doc)
        state = live_layer.read_live_state(doc, 0.5)
        return {"whole": [whole.region, len(whole.rgba), whole.selection is None],
                "txt2img": [txt.region, txt.rgba is None],
                "selection": [state.region, len(state.rgba), len(state.selection), max(state.selection)],
                "expected_region": list(send_region((120, 80, 30, 30), (200, 150)))}

    check("live_state", live_state)

    def live_controls():
        from easel_krita import control_layers, document

        doc = new_doc(40, 30)
        root = doc.rootNode()
        base = root.childNodes()[0]
        base.setPixelData(bgra(200, 180, 160) * (40 * 30), 0, 0, 40, 30)
        lines = doc.createNode("lines", "paintlayer")  # a dark line down column 5, on transparent paper
        root.addChildNode(lines, base)
        lines.setPixelData(bgra(0, 0, 0) * 30, 5, 0, 1, 30)
        off = doc.createNode("off", "paintlayer")
        root.addChildNode(off, lines)
        off.setPixelData(bgra(9, 9, 9) * (40 * 30), 0, 0, 40, 30)
        done(doc)
        control_layers.store(doc, [editing.ControlLayer(lines.uniqueId().toString(), "lineart", 0.8),
                                   editing.ControlLayer(off.uniqueId().toString(), "depth", enabled=False)])
        out = {}
        for strength in (0.5, 1.0):
            state = live_layer.read_live_state(doc, strength)
            items, images = live_layer.read_controls(doc, state)
            generate = editing.build_request(document.KritaDocument(doc), editing.Params("p", strength=strength),
                                             controls=control_layers.present(doc))
            lineart = images["controls.0.image"]
            out[str(strength)] = {
                "controls": [[c.kind, c.image, c.strength] for c in items],
                "as_generate": list(items) == list(generate.request.controls) and images == generate.attachments,
                "size": [lineart.width, lineart.height],
                "line_px": list(lineart.data[(3 * 40 + 5) * 4:(3 * 40 + 5) * 4 + 4]),
                "canvas_px": list(state.rgba[(3 * 40 + 5) * 4:(3 * 40 + 5) * 4 + 4]) if state.rgba else None}
        return out

    check("live_controls", live_controls)

    def live_depths():
        out = {}
        for depth in ("U8", "U16", "F32"):
            try:
                live_layer.check_live_document(new_doc(8, 8, depth))
                out[depth] = None
            except Exception as exc:
                out[depth] = str(exc)
        return out

    check("live_depths", live_depths)
