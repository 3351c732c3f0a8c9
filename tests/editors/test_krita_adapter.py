"""Easel's Krita plugin in a real Krita, headless: `make test-krita` (Debian's Krita 5.1.5, the oldest
supported) or `make test-krita-newest` (the newest Krita Debian ships, in the sid chroot;
EASEL_KRITA_ROOT names it).

Adapter checks through ``kritarunner`` (offscreen, throw-away HOME): the installed plugin reads the
canvas and the selection, inserts result layers at offsets, in BGRA order, converts 16-bit/float
documents, and composes the canvas for live painting like Krita does
(tests/editors/krita/adapter_checks.py and live_checks.py run inside Krita and record what they
observe; the expectations are here). Verdicts come from the result file, never from Krita's exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from easel.client.send_region import send_region

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import run_adapter_checks
from krita_host import need_krita, scratch

pytestmark = pytest.mark.editor


@pytest.fixture(scope="module")
def adapter(request, tmp_path_factory):
    work = scratch("krita-adapter-", tmp_path_factory.getbasetemp())
    try:
        yield run_adapter_checks(need_krita(request, "kritarunner"), work)
    finally:
        if work.root is not None:
            work.cleanup()


def observed(adapter, name):
    if name in adapter["errors"]:
        pytest.fail(f"{name} raised inside Krita:\n{adapter['errors'][name]}")
    return adapter["checks"][name]


def test_plugin_imports_with_bundled_client(adapter):
    got = observed(adapter, "imports")
    assert adapter["krita_version"].startswith("5.")
    assert got["easel"].endswith("/pykrita/easel_krita")
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


def test_live_frames_send_the_control_layers_as_generate_does(adapter):
    got = observed(adapter, "live_controls")
    for strength, canvas in (("0.5", [200, 180, 160, 255]), ("1.0", None)):  # image to image, text to image
        assert got[strength] == {"controls": [["lineart", "controls.0.image", 0.8]], "as_generate": True,
                                 "size": [40, 30], "line_px": [255, 255, 255, 255], "canvas_px": canvas}


def test_live_refuses_deep_documents_in_plain_words(adapter):
    got = observed(adapter, "live_depths")
    assert got["U8"] is None
    assert "8-bit" in got["U16"] and "Convert Image Color Space" in got["F32"]


def test_document_identity(adapter):
    assert observed(adapter, "identity") == {"stable": True, "found": True, "other": True}

