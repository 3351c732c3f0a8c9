"""Easel's Krita plugin in a real Krita's GUI: `make test-krita` (Debian's Krita 5.1.5, the oldest
supported) or `make test-krita-newest` (the newest Krita Debian ships, in the sid chroot;
EASEL_KRITA_ROOT names it).

One Krita GUI run under Xvfb per session (the ``krita_gui`` fixture, tests/editors/conftest.py):
the plugin installed into a throw-away HOME (by the wheel's ``easel install-plugin`` when
EASEL_PLUGIN_INSTALLER is set, else from this checkout), a real Easel server on 127.0.0.1, and a
test-only pykrita plugin (tests/editors/krita/easel_selftest/) that sets the docker's widgets by
objectName and triggers ``easel_generate`` for each use. Every inserted layer is compared with what
the same server returns for the same request asked directly through ``easel.client.connection``.
Screenshot: artifacts/krita_docker.png. Live painting's GUI checks: test_krita_live.py.

Verdicts come from the result files the scripts write inside Krita, never from Krita's exit code.
Set EASEL_TEST_SERVER_URL to run the GUI test against a server you started yourself.
"""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import H, W, ask_power, check_power_layer, check_scenario, power, scenario, scenarios
from krita_host import tail

pytestmark = pytest.mark.editor


@pytest.fixture
def gui(krita_gui):
    return krita_gui


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
    assert offered["negative_shown"] and offered["control_shown"] and offered["variation_shown"]  # SD uses them
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


def test_gui_second_pass_and_exact_size_reach_the_server(gui):
    """*2nd pass* off, its strength 0.3 and *exact size*: the model ran at the canvas's own size (8-px rounded)."""
    record = power(gui, "sizes")
    assert not record["strength_enabled"]  # exact size runs 1:1: no second pass to tune
    p = check_power_layer(gui, W, H, record, "sizes").parameters
    assert p["exact_size"] is True and p["work_size"] == [96, 72] and "second_pass" not in p
    assert (p["hires"], p["hires_strength"]) == ("off", 0.3)


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
