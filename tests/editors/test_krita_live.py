"""Live painting in a real Krita's GUI (the same Krita GUI run as test_krita_gui.py, the
``krita_gui`` fixture of tests/editors/conftest.py): on a document of its own, Live on against a
server that is down, then for real; a stroke, a prompt change, Apply, Live off. Every live frame is
compared with the server's answer to the live request for the canvas as Krita composes it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from easel.client import editing
from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest, Image

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import LH, LW, live_spec
from krita_host import paste, tail

pytestmark = pytest.mark.editor


@pytest.fixture
def gui(krita_gui):
    return krita_gui


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
    assert off["after_undo"][-1] == "Easel Live", off  # Krita's Undo brings the removed layer back (documented)
