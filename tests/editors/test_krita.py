"""Easel's Krita plugin in a real Krita (Debian's 5.1.5): `make test-krita`.

1. Adapter checks through ``kritarunner`` (headless, offscreen, throw-away HOME): the installed
   plugin reads the canvas and the selection, inserts result layers at offsets, in BGRA order,
   and converts 16-bit/float documents (tests/editors/krita/adapter_checks.py).
2. A GUI run under Xvfb: the plugin installed with ``easel.plugin_install`` into a throw-away
   HOME, a real Easel server on 127.0.0.1, and a test-only pykrita plugin
   (tests/editors/krita/easel_selftest/) that sets the docker's widgets by objectName and
   triggers ``easel_generate`` for each use. Every inserted layer is compared with what the same
   server returns for the same request asked directly through ``easel.client.connection``.
   Screenshot: artifacts/krita_docker.png.

Verdicts come from the result files the scripts write inside Krita, never from Krita's exit code.
Set EASEL_TEST_SERVER_URL to run the GUI test against a server you started yourself.
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from pathlib import Path

import pytest

from easel.client import editing
from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest, Image
from easel.client.send_region import send_region

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import (  # noqa: E402
    ask_power,
    check_power_layer,
    check_scenario,
    power,
    power_spec,
    run_adapter_checks,
    run_krita_gui,
    scenario,
    scenarios,
    tiny_server,
)
from krita_host import need, paste, tail  # noqa: E402

pytestmark = pytest.mark.editor

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "krita"
ARTIFACTS = REPO / "artifacts"
OBJECT_NAMES = ["easel_prompt", "easel_negative", "easel_strength", "easel_steps", "easel_seed", "easel_batch",
                "easel_model", "easel_generate_button", "easel_cancel_button", "easel_progress"]
W, H = 100, 72  # the GUI document; the width is not a multiple of 8 on purpose


# ------------------------------------------------------------------------------------ headless adapter


@pytest.fixture(scope="module")
def adapter(request, tmp_path_factory):
    return run_adapter_checks(need(request, "kritarunner"), tmp_path_factory.mktemp("krita-adapter"))


def observed(adapter, name):
    if name in adapter["errors"]:
        pytest.fail(f"{name} raised inside Krita:\n{adapter['errors'][name]}")
    return adapter["checks"][name]


def test_plugin_imports_with_bundled_client(adapter):
    got = observed(adapter, "imports")
    assert adapter["krita_version"].startswith("5.")
    assert got["easel"].endswith("/pykrita/easel")
    assert got["websockets"].startswith(got["easel"] + "/vendor"), "websockets must come from the bundled vendor/"
    assert "EaselExtension" in got["extensions"]


def test_read_canvas_swaps_bgra_to_rgba(adapter):
    got = observed(adapter, "read_u8")
    assert got["raw_bgra_red"] == [0, 0, 255, 255]  # Krita's memory order…
    assert got["red"] == [255, 0, 0, 255]  # …read as RGBA
    assert got["custom"] == [10, 20, 30, 255] and got["part"] == [10, 20, 30, 255] and got["part_len"] == 16
    assert got["white"] == [255, 255, 255, 255]
    assert got["blend"] == [127, 127, 255, 255]  # the visible canvas: half-transparent blue over white
    assert got["len"] == 64 * 48 * 4


def test_read_selection_soft_and_region(adapter):
    got = observed(adapter, "selection")
    assert got["none_box"] is None
    assert got["none_state"] == [True, None, True]  # generate: nothing read
    assert got["refine_state"] == [200 * 150 * 4, [0, 0, 200, 150], True]  # refine: the whole canvas
    assert got["box"] == [120, 80, 30, 30] == got["full_bounds"]
    assert got["values"] == [0, 128, 255] and got["count_255"] == 600 and got["count_128"] == 100
    region = tuple(got["inpaint_region"])
    assert region == send_region((120, 80, 30, 30), (200, 150))  # only the selection's context travels
    assert got["mask_matches_crop"] and got["rgba_matches_crop"]
    assert got["planned"] == {"mode": "inpaint", "x": region[0], "y": region[1], "canvas": [200, 150],
                              "image": list(region[2:]), "mask": True}
    assert got["refine_with_selection_mode"] == "inpaint"


def test_insert_layers_at_offsets_above_active(adapter):
    got = observed(adapter, "insert_u8")
    assert got["names"] == ["Background", "Easel: a cat [11]", "Easel: a cat [12]", "upper", "no active layer"]
    assert got["active_headless"] is None and got["headless_on_top"]
    assert got["pixels_at_offset"] and got["second_offset_pixels"]
    assert got["bounds"] == [7, 9, 5, 4]
    assert got["others_unchanged"]
    assert got["type"] == "paintlayer"


def test_insert_rgba_and_png_results(adapter):
    got = observed(adapter, "insert_opaque_and_png")
    assert got["canvas"] == [200, 100, 50, 255]
    assert got["node_bgra"] == [50, 100, 200, 255]
    assert got["png_canvas"] == [10, 200, 30, 255]
    assert got["png_bounds"] == [30, 20, 4, 2]


def test_insert_when_a_selection_mask_is_active(adapter):
    got = observed(adapter, "placement_with_selection_mask")
    assert got["active_type"] == "selectionmask"
    assert got["parent"] and got["order"] == ["Background", "res"]


@pytest.mark.parametrize("depth", ["U16", "F16", "F32"])
def test_deep_documents_are_converted(adapter, depth):
    got = observed(adapter, f"deep_{depth}")
    assert got["profile"] == "sRGB-elle-V2-g10.icc"  # Krita's default for deep documents is linear
    # linear (0.784, 0.5, 0.25) is sRGB (229, 188, 137): converted, not truncated
    assert all(abs(a - b) <= 1 for a, b in zip(got["read"], [229, 188, 137, 255]))
    assert got["state_len"] == 16 * 12 * 4
    assert got["node_space"] == ["RGBA", depth, "sRGB-elle-V2-g10.icc"]  # the layer is in the document's space
    assert got["bytes_per_px"] == {"U16": 8, "F16": 8, "F32": 16}[depth]
    assert all(abs(a - b) <= 1 for a, b in zip(got["roundtrip"], got["sent"]))


def test_non_rgb_documents_get_a_plain_message(adapter):
    got = observed(adapter, "non_rgb")
    for model in ("GRAYA", "CMYKA"):
        assert got[model] and "RGB" in got[model] and "Convert Image Color Space" in got[model]
    assert "Open or create a document" in got["none"]


def test_settings_round_trip_through_krita(adapter):
    assert observed(adapter, "settings") == {"fresh_defaults": True, "round_trip": True, "raw_strength": "0.6"}


def test_live_reads_the_canvas_as_krita_composes_it(adapter):
    got = observed(adapter, "live_composition")
    assert got["len"] == 40 * 30 * 4 and got["part_equal"]
    assert got["max_diff"] <= 1, "opacity, multiply, hidden layers and groups must compose like Krita's projection"
    assert got["opaque_px"][0] == got["opaque_px"][1] and got["hidden_left_out"]


def test_live_layer_reused_locked_on_top_and_left_out_of_reads(adapter):
    got = observed(adapter, "live_layer")
    first, second, apply = got["first"], got["second"], got["apply"]
    assert first == {"name": "Easel Live", "locked": True, "top": "Easel Live", "visible_px": [9, 99, 199, 255],
                     "read_ignores_it": True}  # shown on the canvas, never fed back into the next frame
    assert second.pop("stale") == {"count": 1, "cleared": True, "new": True}  # extras removed, the kept one cleared
    assert second == {"count": 1, "old_cleared": True, "new_px": [1, 2, 3, 200], "bounds": [20, 15, 10, 10]}
    assert apply["names"][-2:] == ["Easel: a lake [5]", "Easel Live"]  # a normal layer, under the live one
    assert apply["equal"] and apply["type"] == "paintlayer" and not apply["locked"] and apply["others_unchanged"]
    assert got["removed"] == 1 and "Easel Live" not in got["after"] and "Easel: a lake [5]" in got["after"]


def test_live_reads_the_same_region_as_generate(adapter):
    got = observed(adapter, "live_state")
    assert got["whole"] == [[0, 0, 200, 150], 200 * 150 * 4, True]
    assert got["txt2img"] == [None, True]
    region = got["expected_region"]
    assert got["selection"] == [region, region[2] * region[3] * 4, region[2] * region[3], 255]


def test_live_refuses_deep_documents_in_plain_words(adapter):
    got = observed(adapter, "live_depths")
    assert got["U8"] is None
    assert "8-bit" in got["U16"] and "Convert Image Color Space" in got["F32"]


def test_document_identity(adapter):
    assert observed(adapter, "identity") == {"stable": True, "found": True, "other": True}


# ------------------------------------------------------------------------------------ GUI end to end


@pytest.fixture(scope="module")
def server_url(request, tmp_path_factory):
    external = os.environ.get("EASEL_TEST_SERVER_URL")
    if external:
        yield external
        return
    with tiny_server(request.getfixturevalue("tiny_sd_path"), tmp_path_factory.mktemp("krita-server")) as url:
        yield url


LW, LH = 96, 64  # the live document


def live_spec(stroke_s: float = 1.5) -> dict:
    return {"width": LW, "height": LH, "background_bgra": [230, 230, 230, 255], "sketch_box": [10, 10, 30, 20],
            "sketch_bgra": [200, 60, 40, 255], "stroke_bgra": [30, 30, 200, 255], "stroke": [12, 36, 6],
            "stroke_s": stroke_s, "dab_s": 0.1, "timeout": 60, "prompt2": "a red boat at dusk", "dead_url": "ws://127.0.0.1:9",
            "params": dict(prompt="a blue lake", negative="", strength=60, steps=0, guidance=None, seed=0,
                           seed_random=True, batch=3)}


@pytest.fixture(scope="module")
def gui(request, server_url, tmp_path_factory):
    tools = tuple(need(request, t) for t in ("krita", "Xvfb", "import"))
    spec = {"url": server_url, "dead_url": "ws://127.0.0.1:9", "width": W, "height": H,
            "background_bgra": [200, 170, 140, 255], "sketch_box": [20, 14, 40, 30], "sketch_bgra": [40, 40, 220, 255],
            "scenarios": scenarios(), "object_names": OBJECT_NAMES, "timeout": 90, "quit_wait": 60,
            "long_steps": 150, "long_batch": 4,  # the job to cancel, and the one running when Krita quits
            "live": live_spec(), "power": power_spec()}
    return run_krita_gui(tools, tmp_path_factory.mktemp("krita-gui"), spec, server_url, ARTIFACTS / "krita_docker.png")


def test_gui_docker_connects_with_env_url(gui):
    r = gui.result
    assert r.get("docker_found"), f"no Easel docker; Krita log:\n{tail(gui.log)}"
    assert r["actions"] == {"easel_generate": True, "easel_cancel": True}
    assert all(r["widgets"].values()), r["widgets"]
    assert r["url_field"] == gui.url  # EASEL_URL presets the server
    assert r["connection"].startswith("connected"), r["connection"]
    assert r["model"] and r["model"] in r["models"]


def test_gui_server_down_is_said_in_plain_words(gui):
    r = gui.result
    assert r["dead_connection"].startswith("not connected") and "ws://127.0.0.1:9" in r["dead_connection"]
    assert r["dead_status"].startswith("Generation failed") and "cannot reach the Easel server" in r["dead_status"]
    assert "color" in r["dead_status_style"]


def test_gui_generate_new_image_at_canvas_size(gui):
    record = check_scenario(gui, W, H, "generate", "txt2img")
    assert [layer["bounds"] for layer in record["new_layers"]] == [[0, 0, W, H]] * 2


def test_gui_refine_visible_canvas(gui):
    record = check_scenario(gui, W, H, "refine", "img2img")
    assert record["new_layers"][0]["bounds"] == [0, 0, W, H]


def test_gui_regenerate_soft_selection(gui):
    record = check_scenario(gui, W, H, "selection", "inpaint")
    mask = (gui.out / "selection-mask.gray").read_bytes()
    assert any(0 < v < 255 for v in mask), "the feathered selection should be soft"
    x, y, w, h = record["new_layers"][0]["bounds"]
    sx, sy, sw, sh = scenarios()[2]["selection"]
    assert x <= sx and y <= sy and x + w >= sx + sw and y + h >= sy + sh  # covers the selection…
    assert w * h < W * H  # …but not the whole canvas
    assert record["results_strip"] == 4  # this session's results, to apply again


def test_gui_cancel_stops_the_job(gui):
    cancel = gui.result.get("cancel")
    assert cancel and cancel["running"] and cancel["stopped"], cancel
    assert cancel["status"] == "Cancelled." and cancel["unchanged"]
    assert cancel["seconds"] < 10 and max(cancel["progress"]) < 100


def test_gui_apply_again_then_undo(gui):
    applied, undo = gui.result.get("apply_again"), gui.result.get("undo")
    first = scenario(gui, "generate")["new_layers"][0]
    assert applied and applied["names"] == [first["name"]], applied
    assert (gui.out / "apply-layer0.rgba").read_bytes() == (gui.out / first["file"]).read_bytes()
    assert undo["back_to_before"], undo  # Ctrl+Z removes the added layer and nothing else


def test_gui_shows_live_preview(gui):
    seen = [p for s in gui.result["scenarios"] for p in s["progress_seen"]]
    assert any(has_preview for _, has_preview in seen), "no step preview appeared while generating"


def test_gui_closing_mid_job_is_clean(gui):
    quit_info = gui.result.get("quit")
    assert quit_info and quit_info["job_running"], f"no job was running at quit: {quit_info}"
    assert gui.timings["quit_s"] < 30, f"Krita did not close promptly after file_quit: {gui.timings}"
    log = gui.log.read_text(errors="replace")
    assert "Traceback" not in log, tail(gui.log)


def test_gui_settings_persist(gui):
    config = configparser.RawConfigParser(strict=False, interpolation=None)
    text = (gui.home / ".config" / "kritarc").read_text()
    config.read_string("[krita-top-level]\n" + text)  # KConfig writes its first keys without a group
    assert config.has_section("easel"), "Krita saved no Easel settings"
    assert config.get("easel", "url") == gui.url
    assert config.get("easel", "prompt") == scenarios()[0]["prompt"]
    assert config.get("easel", "strength") == "1.0"


def test_gui_screenshot_saved(gui):
    assert gui.shot.exists() and gui.shot.stat().st_size > 10_000, "no screenshot in artifacts/"


# ------------------------------------------------------------------------------------ power features (GUI)


def test_gui_more_offers_what_the_server_offers(gui):
    assert power(gui, "deselected")
    offered = power(gui, "offered")
    assert offered["panel"] and offered["loras_shown"]
    assert offered["lora_pick"][1:] == ["ink.safetensors"] and offered["control_models"] == ["scribble"]
    assert not offered["refiner_shown"]  # the test server has no refiner
    assert power(gui, "picked") == "ink.safetensors:1"


def test_gui_lora_and_variation_layer_equals_the_server_result(gui):
    result = check_power_layer(gui, W, H, power(gui, "lora"), "lora")
    p = result.parameters
    assert p["loras"] == [{"name": "ink.safetensors", "weight": 0.8}]  # "ink:0.8" completed like the server lists it
    assert (p["variation_seed"], p["variation_strength"]) == (4242, 0.3)


def test_gui_history_lists_jobs_and_inserts_one_as_a_layer(gui):
    record = power(gui, "history")
    assert record["listed"] and "ink cat" in record["labels"][0]
    insert = record["insert"]
    assert insert["done"] and insert["unchanged"] and len(insert["layers"]) == 1, insert["status"]
    lora_layer = power(gui, "lora")["layers"][0]
    assert insert["layers"][0]["name"] == lora_layer["name"]
    assert (gui.out / insert["layers"][0]["file"]).read_bytes() == (gui.out / lora_layer["file"]).read_bytes()


def test_gui_vary_last_keeps_the_seed_and_draws_a_variation(gui):
    record = power(gui, "vary")
    assert record["seed"] == "321" and record["variation_seed"].isdigit() and record["variation_strength"] == 0.2
    result = check_power_layer(gui, W, H, record, "vary")
    assert result.parameters["variation_seed"] == int(record["variation_seed"])
    assert "loras" not in result.parameters


def test_gui_canvas_as_sketch_guide_layer_equals_the_server_result(gui):
    result = check_power_layer(gui, W, H, power(gui, "sketch"), "sketch")
    assert result.parameters["control_model"] == "scribble"


def test_gui_upscale_opens_a_new_document_with_the_server_pixels(gui):
    record = power(gui, "upscale")
    assert record["done"] and record["new_documents"] == 1, record["status"]
    assert record["original_unchanged"] and record["active_is_new"]
    assert record["size"] == [2 * W, 2 * H] and len(record["layers"]) == 1
    result = ask_power(gui, "upscale", W, H)
    image = result.images[0].image
    assert (image.width, image.height) == (2 * W, 2 * H)
    got = (gui.out / "power-upscale-doc.rgba").read_bytes()
    assert got == image.data, f"{sum(a != b for a, b in zip(got, image.data))} bytes differ from the server's"


# ------------------------------------------------------------------------------------ live painting (GUI)


def live_record(gui) -> dict:
    if "error" in gui.result:
        pytest.fail(f"the self-test failed inside Krita:\n{gui.result['error']}")
    record = gui.result.get("live")
    if not record or "after_stroke" not in record:
        pytest.fail(f"the live part did not finish: {record}; events: {gui.result.get('events')}\n{tail(gui.log)}")
    return record


def live_seed(record) -> int:
    return int(re.search(r"seed (\d+)", record["after_stroke"]["status"]).group(1))


def ask_live_frame(gui, prompt: str, canvas: bytes, seed: int):
    """The oracle: the live frame the plugin should have sent, asked directly through easel.client.connection."""
    params = live_spec()["params"]
    request = GenerateRequest(job=new_job_id(), prompt=prompt, strength=params["strength"] / 100,
                              steps=editing.LIVE_STEPS, seed=seed, model=gui.result["model"], canvas_width=LW,
                              canvas_height=LH, replace=True, preview=False)
    with Client(gui.url, image_format="rgba") as client:
        return client.generate(request, Image.rgba(LW, LH, canvas))


def test_gui_live_stroke_updates_the_one_live_layer(gui):
    record = live_record(gui)
    print(f"live in Krita (tiny model, {LW}x{LH}): first frame {record['first_frame_s']} s, {record['stroke']}, "
          f"status {record['after_stroke']['status']!r}")
    assert record["checked"] and not record["apply_enabled_before"]
    first, stroke = record["first"], record["after_stroke"]
    assert stroke["count"] == 1 and stroke["locked"], "exactly one live layer, locked"
    assert stroke["bounds"] == [0, 0, LW, LH]  # the whole canvas is refined: the frame covers it
    assert stroke["digest"] != first["digest"], "the stroke did not change the live layer"
    assert record["stroke"]["settled"] and record["stroke"]["frames_during"] >= 2, record["stroke"]
    seed = live_seed(record)
    canvas = (gui.out / "live-stroke-canvas.rgba").read_bytes()
    stroke_box = live_spec()["stroke"]
    assert canvas[(stroke_box[1] * LW + stroke_box[0]) * 4:][:4] == bytes([200, 30, 30, 255])  # the stroke is in
    result = ask_live_frame(gui, live_spec()["params"]["prompt"], canvas, seed)
    assert paste(result.images[0], LW, LH) == (gui.out / "live-stroke-layer.rgba").read_bytes(), \
        "the live layer must show the frame for the canvas after the stroke (not a stale one)"


def test_gui_live_with_the_server_down_says_so(gui):
    dead = live_record(gui)["dead"]
    assert "cannot reach the Easel server at ws://127.0.0.1:9" in dead["status"] and "trying again" in dead["status"]
    assert "color" in dead["style"] and dead["checked"] and dead["layers"] == 0


def test_gui_live_prompt_change_keeps_the_seed(gui):
    record = live_record(gui)
    after = record["after_prompt"]
    assert after.get("count") == 1 and after["digest"] != record["after_stroke"]["digest"], after
    assert f"seed {live_seed(record)}" in after["status"]
    canvas = (gui.out / "live-prompt-canvas.rgba").read_bytes()
    result = ask_live_frame(gui, live_spec()["prompt2"], canvas, live_seed(record))
    assert paste(result.images[0], LW, LH) == (gui.out / "live-prompt-layer.rgba").read_bytes()


def test_gui_live_apply_copies_the_frame_into_a_normal_layer(gui):
    record = live_record(gui)
    applied = record["apply"]
    name = editing.layer_name(live_spec()["prompt2"], live_seed(record))
    assert applied["new"] == [name] and applied["types"] == ["paintlayer"] and applied["locked"] == [False], applied
    assert applied["live_count"] == 1 and applied["names"][-2:] == [name, "Easel Live"]
    assert applied["unchanged"], "Apply changed an existing layer"
    assert (gui.out / "live-applied.rgba").read_bytes() == (gui.out / "live-prompt-layer.rgba").read_bytes()
    assert record["apply_enabled"] and name in applied["main_status"]


def test_gui_live_off_removes_the_live_layer(gui):
    off = live_record(gui)["off"]
    assert not off["checked"] and "Easel Live" not in off["names"], off
    assert editing.layer_name(live_spec()["prompt2"], live_seed(live_record(gui))) in off["names"]
    assert off["status"] == "Live: off."
    assert off["after_undo"][-1] == "Easel Live"  # Krita's Undo brings the removed layer back (documented)
