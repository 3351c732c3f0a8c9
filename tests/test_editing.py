"""Unit tests for the editor-independent plugin helpers in server/editing.py."""

from server import editing
from server.editing import Params


# ----------------------------------------------------------------------------- GIMP plug-in helpers


def test_resolve_url_prefers_explicit_then_env_then_saved():
    env = {"EASEL_URL": "ws://env:1"}
    assert editing.resolve_url("ws://given:2", env, "ws://saved:3") == "ws://given:2"
    assert editing.resolve_url("  ", env, "ws://saved:3") == "ws://env:1"
    assert editing.resolve_url("", {}, "ws://saved:3") == "ws://saved:3"
    assert editing.resolve_url(None, None, None) == editing.DEFAULT_SERVER_URL
    assert editing.resolve_url("127.0.0.1:9000") == "ws://127.0.0.1:9000"  # scheme added
    assert editing.resolve_url(" wss://host/easel ") == "wss://host/easel"


def test_params_from_ui_maps_widget_defaults_to_none():
    p = editing.params_from_ui(" a cat ", "", 0.5, 0, -1.0, -1, 2, "  ")
    assert (p.prompt, p.strength, p.steps, p.guidance, p.seed, p.batch, p.model) == \
        ("a cat", 0.5, None, None, -1, 2, None)
    p = editing.params_from_ui("x", "blurry", 1.0, 12, 0.0, 7, 1, "tiny-sd")
    assert (p.negative_prompt, p.steps, p.guidance, p.seed, p.model) == ("blurry", 12, 0.0, 7, "tiny-sd")


def test_check_request_reports_the_field_in_plain_words():
    state = editing.EditorState(64, 64)
    assert editing.check_request(editing.plan_request(state, Params("ok", seed=3))) is None
    problem = editing.check_request(editing.plan_request(state, Params("x", batch=0)))
    assert problem.startswith("bad parameter:") and "batch" in problem
    assert "strength" in editing.check_request(editing.plan_request(
        editing.EditorState(8, 8, bytes(256), (0, 0, 8, 8)), Params("x", strength=-0.5)))
