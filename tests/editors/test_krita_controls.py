"""Control layers in the Krita docker, in a real Krita's GUI: `make test-krita` (Krita 5.1.5) and
`make test-krita-newest` (the sid chroot's Krita 5.3).

A real `easel serve` with the tiny SD model and three tiny ControlNets whose names give their kinds
(lineart, depth, canny; acting zero-convs, so every guide steers), and the tiny SDXL model with a tiny
ControlNet Union that serves both kinds. The self-test plugin runs only its
"controls" part (tests/editors/krita/easel_selftest/controls_part.py): it paints a line layer and an
opaque depth ramp over the picture, adds them in the docker as lineart and depth control layers,
refines the canvas, refines it again on the SDXL model, switches the depth layer off and refines again, adds a
smaller picture as a style reference (tiny IP-Adapters and image encoder in h94's layout, served with
--ip-adapter) and refines on SD and SDXL and again with the reference switched off, makes a canny guide with
"From image", then line art and depth guides with "From image" (the server's tiny annotator and
depth models in its models folder), and saves and reopens the document as .kra. Each result layer must equal, pixel for
pixel, the same request sent directly with the shared client, built here from the layers' own pixels
and the canvas WITHOUT the control layers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from easel.client import editing
from easel.client.connection import Client, new_job_id
from easel.client.protocol import REFERENCE_KINDS, Control, GenerateRequest, Image

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import H, W, gui_spec, krita_gui_session, recorded
from krita_host import ARTIFACTS, paste

pytestmark = pytest.mark.editor
NETS = {"lineart": "control_v11p_sd15_lineart", "depth": "control_v11f1p_sd15_depth",
        "canny": "control_v11p_sd15_canny"}
SETTINGS = {"lineart": (0.8, 0.0, 0.9), "depth": (0.6, 0.1, 1.0)}  # strength, start, end
XL, UNION = "tiny-sdxl", "controlnet-union-sdxl-tiny"
MADE = ["lineart", "depth"]  # "From image" guides the server's models make (after canny)
REF = {"box": [36, 8, 20, 14], "strength": 0.7}  # the style reference: x, y, w, h on the canvas
PARAMS = dict(prompt="a tower at night", negative="blurry", strength=60, steps=4, guidance=None, seed=5, batch=1)


@pytest.fixture(scope="module")
def url(tiny_sd_path, tiny_sdxl_path, tmp_path_factory):
    from helpers.preprocess_models import save_random_annotators, save_tiny_depth_anything
    from helpers.server_harness import running_server
    from helpers.tiny_ip_adapter import build_tiny_ip_adapter_repo
    from helpers.tiny_models import build_tiny_controlnet, build_tiny_controlnet_union

    root = tmp_path_factory.mktemp("krita-controls-server")
    nets = [build_tiny_controlnet(tiny_sd_path, root / name, seed=i) for i, name in enumerate(NETS.values())]
    nets.append(build_tiny_controlnet_union(tiny_sdxl_path, root / UNION, seed=3))
    extra = [arg for net in nets for arg in ("--control-model", net)]
    extra += ["--ip-adapter", build_tiny_ip_adapter_repo(root / "IP-Adapter", tiny_sd_path, tiny_sdxl_path)]
    save_random_annotators(root / "models" / "annotators" / "Annotators")  # "From image" line art
    save_tiny_depth_anything(root / "models" / "annotators" / "Depth-Anything-V2-Small-hf")
    with running_server([str(tiny_sd_path), str(tiny_sdxl_path)], *extra, "--models-dir", str(root / "models"),
                        log_path=root / "server.log") as found:
        yield found


@pytest.fixture(scope="module")
def gui(request, url, tmp_path_factory):
    spec = {key: value for key, value in gui_spec(url).items() if key not in ("live", "power")}
    spec.update(parts=["controls"], controls={"lines_box": [30, 16, 44, 40], "params": PARAMS, "xl_model": XL,
                                              "made_kinds": MADE, "reference": REF,
                                              **SETTINGS})
    yield from krita_gui_session(request, tmp_path_factory.getbasetemp(), spec, url,
                                 ARTIFACTS / "krita_controls_docker.png")


def part(gui, name: str) -> dict:
    return recorded(gui, "controls", name)


def dump(gui, name: str) -> bytes:
    return (gui.out / name).read_bytes()


def direct(gui, url: str, kinds: list[str], canvas: str, model: str | None = None):
    """The oracle: the refine request with ``kinds``' layers as controls (their own pixels; line art made
    white on black like the sketch guide) over the canvas dumped without the control layers."""
    controls, attachments = [], {}
    for kind in kinds:
        name = f"controls.{len(controls)}.image"
        if kind == "style":  # the reference: whole, at its own size
            attachments[name] = Image.rgba(*REF["box"][2:], dump(gui, "controls-ref.rgba"))
            controls.append(Control(kind, name, REF["strength"]))
            continue
        pixels = dump(gui, f"controls-{'lines' if kind == 'lineart' else kind}.rgba")
        if kind == "lineart":
            pixels = editing.sketch_guide(pixels)[0]
        attachments[name] = Image.rgba(W, H, pixels)
        controls.append(Control(kind, name, *SETTINGS[kind]))
    p = PARAMS
    request = GenerateRequest(job=new_job_id(), prompt=p["prompt"], negative_prompt=p["negative"], steps=p["steps"],
                              seed=p["seed"], batch=1, model=model or gui.result["model"], canvas_width=W, canvas_height=H,
                              strength=p["strength"] / 100, x=0, y=0, controls=controls)
    with Client(url, image_format="rgba") as client:
        return client.generate(request, Image.rgba(W, H, dump(gui, canvas)), attachments=attachments)


def check_layer(gui, url: str, record: dict, kinds: list[str], canvas: str, model: str | None = None):
    assert record["done"] and record["started_busy"] and record["unchanged"], record["status"]
    assert len(record["layers"]) == 1, record["status"]
    result = direct(gui, url, kinds, canvas, model)
    image = result.images[0]
    assert record["layers"][0]["name"] == editing.layer_name(PARAMS["prompt"], PARAMS["seed"]) == \
        editing.layer_name(PARAMS["prompt"], image.seed)
    got, want = dump(gui, record["layers"][0]["file"]), paste(image, W, H)
    assert got == want, f"{sum(a != b for a, b in zip(got, want))} bytes differ from the direct request's result"
    return result


def test_panel_offers_the_models_control_kinds(gui, url):
    with Client(url) as client:
        kinds = client.welcome["models"][0]["controls"]
    assert sorted(kinds) == sorted([*NETS, *REFERENCE_KINDS])
    offered = part(gui, "offered")
    assert offered["shown"] and offered["kinds"] == kinds


def test_add_lists_the_layers_and_stores_them_with_the_document(gui):
    added = part(gui, "added")
    assert added["rows"] == [["Lines: lineart 0.8 (0–0.9)", True], ["Depth: depth 0.6 (0.1–1)", True]]
    stored = editing.controls_from_text(added["annotation"])
    assert [(c.layer, c.kind, c.strength, c.start, c.end, c.enabled) for c in stored] == [
        (added["ids"][0], "lineart", *SETTINGS["lineart"], True), (added["ids"][1], "depth", *SETTINGS["depth"], True)]


def test_generate_sends_both_layers_as_controls_not_as_canvas(gui, url):
    assert dump(gui, "controls-canvas.rgba") != dump(gui, "controls-visible.rgba")  # the depth ramp covers it
    result = check_layer(gui, url, part(gui, "both"), ["lineart", "depth"], "controls-canvas.rgba")
    assert [c["kind"] for c in result.parameters["controls"]] == ["lineart", "depth"]


def test_the_same_layers_guide_an_sdxl_model_through_its_controlnet_union(gui, url):
    assert {"lineart", "depth"} <= set(part(gui, "xl_kinds"))  # the kind list follows the chosen model
    record = part(gui, "both_xl")
    assert record["model"] == XL
    result = check_layer(gui, url, record, ["lineart", "depth"], "controls-canvas-xl.rgba", XL)
    assert result.parameters["model"] == XL
    assert [(c["kind"], c["model"]) for c in result.parameters["controls"]] == [("lineart", UNION), ("depth", UNION)]


def test_a_layer_switched_off_is_left_out(gui, url):
    toggled = part(gui, "toggled")
    assert toggled["rows"][1] == ["Depth: depth 0.6 (0.1–1)", False]
    assert [c.enabled for c in editing.controls_from_text(toggled["annotation"])] == [True, False]
    result = check_layer(gui, url, part(gui, "one"), ["lineart"], "controls-canvas2.rgba")
    assert [c["kind"] for c in result.parameters["controls"]] == ["lineart"]


def test_a_reference_layer_has_no_range_and_no_from_image(gui):
    added = part(gui, "ref_added")
    assert added["bounds"] == REF["box"]  # the layer's own bounds: what is sent
    assert added["rows"][2] == ["Ref: style 0.7", True]
    assert not added["range_enabled"] and added["range_enabled_lineart"] and not added["from_image_enabled"]
    ref = editing.controls_from_text(added["annotation"])[2]
    assert (ref.kind, ref.strength, ref.start, ref.end) == ("style", 0.7, 0.0, 1.0)  # the range fields held 0.3–0.6


@pytest.mark.parametrize("name, model", [("ref", None), ("ref_xl", XL)])
def test_a_style_reference_is_sent_whole_beside_the_line_art(gui, url, name, model):
    record = part(gui, name)
    canvas = "controls-canvas-ref-xl.rgba" if model else "controls-canvas-ref.rgba"
    result = check_layer(gui, url, record, ["lineart", "style"], canvas, model)
    assert [c["kind"] for c in result.parameters["controls"]] == ["lineart", "style"]
    assert result.parameters["model"] == (model or gui.result["model"])


def test_a_reference_switched_off_is_left_out(gui, url):
    record = part(gui, "ref_off")
    assert record["rows"][2] == ["Ref: style 0.7", False]
    result = check_layer(gui, url, record, ["lineart"], "controls-canvas-ref-off.rgba")
    assert [c["kind"] for c in result.parameters["controls"]] == ["lineart"]
    steered = direct(gui, url, ["lineart", "style"], "controls-canvas-ref-off.rgba")
    assert steered.images[0].image.data != result.images[0].image.data  # the reference steers when it is on


def test_from_image_adds_the_servers_canny_guide_as_a_control_layer(gui, url):
    record = part(gui, "from_image")
    assert record["done"] and record["unchanged"] and len(record["layers"]) == 1, record["status"]
    layer = record["layers"][0]
    assert layer["name"] == editing.controls.guide_name("canny") and layer["type"] == "paintlayer"
    source = dump(gui, "controls-source.rgba")
    assert source != dump(gui, "controls-source-visible.rgba")
    with Client(url, image_format="rgba") as client:
        guide = client.preprocess("canny", Image.rgba(W, H, source))
    assert (guide.width, guide.height) == (W, H)
    want = guide.data if guide.format == "rgba" else None
    assert dump(gui, layer["file"]) == want, "the layer differs from the server's canny of the canvas"
    stored = editing.controls_from_text(record["annotation"])
    assert [c.kind for c in stored] == ["lineart", "depth", "style", "canny"]
    # the panel's settings as last set (for the reference: its range fields were off, but hold 0.3–0.6)
    assert record["rows"][3] == ["Easel guide: canny: canny 0.7 (0.3–0.6)", True]


@pytest.mark.parametrize("kind", MADE)
def test_from_image_makes_line_art_and_depth_guides_with_the_servers_models(gui, url, kind):
    record = part(gui, f"from_image_{kind}")
    assert record["done"] and record["unchanged"] and len(record["layers"]) == 1, record["status"]
    layer = record["layers"][0]
    assert layer["name"] == editing.controls.guide_name(kind)
    with Client(url, image_format="rgba") as client:
        guide = client.preprocess(kind, Image.rgba(W, H, dump(gui, f"controls-source-{kind}.rgba")))
    assert dump(gui, layer["file"]) == guide.data, f"the layer differs from the server's {kind} of the canvas"
    assert len(set(guide.data)) > 2  # a picture, not a blank


def test_from_image_is_offered_only_for_the_kinds_the_server_makes(gui):
    record = part(gui, "from_image_kinds")
    assert {"lineart", "depth", "canny"} <= set(record["offered"])  # Add still takes every kind of the model
    assert record["enabled"] == {"lineart": True, "depth": True, "canny": True}


def test_the_list_survives_saving_and_reopening_the_kra(gui):
    record = part(gui, "reopened")
    assert record["saved"] and record["opened"]
    stored = editing.controls_from_text(record["annotation"])
    assert [c.kind for c in stored] == ["lineart", "depth", "style", "canny", *MADE]
    assert all(c.layer in record["layers"] for c in stored)  # the layers keep their ids in the .kra
    assert [row[0].split(":")[0] for row in record["rows"]] == ["Lines", "Depth", "Ref", *["Easel guide"] * 3]
    assert [row[1] for row in record["rows"]] == [True, False, False, True, True, True]


def test_no_traceback_in_kritas_log(gui):
    assert "Traceback" not in gui.log.read_text(errors="replace")
    assert json.dumps(gui.result)  # the result file was complete
