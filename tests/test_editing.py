"""Unit tests for the editor-independent plugin helpers in server/editing.py."""

from server import editing
from server.client import ProgressInfo
from server.editing import IMG2IMG, INPAINT, TXT2IMG, Params


def test_read_plan_txt2img_reads_nothing():
    assert editing.read_plan(640, 480, None, 1.0) == (TXT2IMG, None)
    assert editing.read_plan(640, 480, (0, 0, 0, 0), 1.0) == (TXT2IMG, None)  # empty selection


def test_read_plan_refine_reads_whole_canvas():
    assert editing.read_plan(640, 480, None, 0.6) == (IMG2IMG, (0, 0, 640, 480))


def test_read_plan_selection_reads_its_context_region_only():
    mode, region = editing.read_plan(4096, 4096, (2000, 2000, 100, 80), 1.0)
    assert mode == INPAINT
    x, y, w, h = region
    assert x <= 2000 and y <= 2000 and x + w >= 2100 and y + h >= 2080  # contains the selection
    assert w < 400 and h < 400  # …and not the whole canvas
    assert editing.read_plan(4096, 4096, (2000, 2000, 100, 80), 0.5)[0] == INPAINT


def test_read_plan_selection_region_stays_inside_canvas():
    mode, (x, y, w, h) = editing.read_plan(100, 70, (90, 60, 10, 10), 1.0)
    assert mode == INPAINT
    assert x >= 0 and y >= 0 and x + w <= 100 and y + h <= 70


def test_model_choices():
    welcome = {"models": [{"id": "a", "family": "sd1"}, {"id": "b"}], "default_model": "b"}
    assert editing.model_choices(welcome) == (["a", "b"], "b")
    assert editing.model_choices({"models": [{"id": "a"}]}) == (["a"], "a")
    assert editing.model_choices({}) == ([], None)


def test_progress_text():
    assert editing.progress_text(ProgressInfo("j", "denoise", 3, 12)) == (25, "step 3 of 12")
    percent, text = editing.progress_text(ProgressInfo("j", "queued", 0, 0, "queued at position 2"))
    assert percent == 0 and "position 2" in text
    assert editing.progress_text(ProgressInfo("j", "load", 1, 2, "loading tiny"))[0] == 50
    assert editing.progress_text(ProgressInfo("j", "denoise", 0, 0))[0] == 0


def test_strength_text():
    assert "new image" in editing.strength_text(100)
    assert editing.strength_text(60).startswith("60%") and "refine" in editing.strength_text(60)


def test_parse_seed():
    assert editing.parse_seed(" 1234 ") == 1234
    assert editing.parse_seed("") == -1
    assert editing.parse_seed("-5") == -1
    assert editing.parse_seed("abc") == -1
    assert editing.parse_seed(str(2**70)) == 2**63 - 1


def test_params_settings_round_trip():
    params = Params(prompt="a red fox", negative_prompt="blurry", strength=0.6, steps=12, guidance=None,
                    seed=42, batch=3, model="tiny")
    values = editing.params_to_settings(params)
    assert all(isinstance(v, str) for v in values.values())
    assert values["guidance"] == ""
    assert editing.params_from_settings(values) == params


def test_params_from_settings_tolerates_bad_values():
    defaults = Params(prompt="x", strength=1.0, steps=20, batch=1)
    got = editing.params_from_settings({"strength": "lots", "steps": "", "batch": "0", "seed": "-9",
                                        "model": "", "prompt": "y"}, defaults)
    assert got.prompt == "y" and got.strength == 1.0 and got.steps is None and got.batch == 1
    assert got.seed == -1 and got.model is None
    assert editing.params_from_settings({"strength": "7"}).strength == 1.0
    assert editing.params_from_settings({}, defaults) == defaults


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
