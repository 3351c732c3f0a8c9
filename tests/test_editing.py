"""Unit tests for the editor-independent plugin helpers in server/easel/client/editing/."""

from easel.client import editing
from easel.client.connection import ProgressInfo
from easel.client.editing import IMG2IMG, INPAINT, TXT2IMG, Params


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


# ----------------------------------------------------------------------------- power features
import pytest  # noqa: E402

from easel.client.connection import Client  # noqa: E402
from easel.client.protocol import Image  # noqa: E402


def test_parse_loras_reads_names_and_weights():
    assert editing.parse_loras("") is None and editing.parse_loras(" , \n") is None
    assert editing.parse_loras("ink.safetensors:0.8, styles/soft.safetensors\nbold:-1.5") == [
        {"name": "ink.safetensors", "weight": 0.8}, {"name": "styles/soft.safetensors", "weight": 1.0},
        {"name": "bold", "weight": -1.5}]
    for bad, words in [("ink:abc", "weight a number"), ("ink:9", "between -4 and 4"), (":0.5", "needs a name"),
                       (",".join(f"l{i}" for i in range(9)), "at most 8")]:
        with pytest.raises(ValueError, match=words):
            editing.parse_loras(bad)


def test_lora_text_round_trip_add_and_match():
    loras = [{"name": "ink.safetensors", "weight": 0.8}, {"name": "a/b.safetensors", "weight": 1.0}]
    assert editing.loras_text(loras) == "ink.safetensors:0.8, a/b.safetensors:1"
    assert editing.parse_loras(editing.loras_text(loras)) == loras
    assert editing.add_lora("", "ink.safetensors") == "ink.safetensors:1"
    assert editing.add_lora("ink.safetensors:0.5,", "soft", 0.7) == "ink.safetensors:0.5, soft:0.7"
    assert editing.add_lora("ink.safetensors:0.5", "ink.safetensors") == "ink.safetensors:0.5"
    offered = ["ink.safetensors", "styles/soft.safetensors"]
    assert editing.match_loras([{"name": "ink", "weight": 1.0}, {"name": "nope", "weight": 1.0}], offered) == [
        {"name": "ink.safetensors", "weight": 1.0}, {"name": "nope", "weight": 1.0}]


def test_features_default_to_a_plain_request():
    state = editing.EditorState(64, 48)
    planned = editing.plan_request(state, Params("a cat", seed=3))
    message = dict(planned.request.to_message())
    plan = editing.apply_features(planned, editing.features_from_ui(), control=Image.rgba(1, 1, bytes(4)))
    assert plan.request.to_message() == message and plan.control is None


def test_apply_features_sets_fields_and_attaches_control():
    state = editing.EditorState(64, 48)
    features = editing.features_from_ui("ink:0.5", 77, 0.3, "scribble", 0.8, True, 0.7,
                                        available_loras=["ink.safetensors"])
    guide = Image.rgba(64, 48, bytes(64 * 48 * 4))
    plan = editing.apply_features(editing.plan_request(state, Params("x", seed=3)), features, guide)
    m = plan.request.to_message()
    assert m["loras"] == [{"name": "ink.safetensors", "weight": 0.5}]
    assert (m["control_model"], m["control_strength"], m["variation_seed"], m["variation_strength"]) == \
        ("scribble", 0.8, 77, 0.3)
    assert (m["refiner"], m["refiner_switch"]) == (True, 0.7)
    assert plan.control is guide and plan.mode == editing.TXT2IMG and editing.check_request(plan) is None


def _rgba(pixels):
    return bytes(v for px in pixels for v in px)


def test_sketch_guide_inverts_dark_on_light_only():
    paper, ink, clear = (250, 250, 240, 255), (10, 10, 10, 255), (0, 0, 0, 0)
    sketch = _rgba([paper] * 90 + [ink] * 10)
    assert editing.is_dark_on_light(sketch)
    guide, inverted = editing.sketch_guide(sketch)
    assert inverted and guide[:4] == bytes((5, 5, 15, 255)) and guide[-4:] == bytes((245, 245, 245, 255))
    lines = _rgba([(0, 0, 0, 255)] * 90 + [(255, 255, 255, 255)] * 10)
    assert editing.sketch_guide(lines) == (lines, False)
    # dark lines on a transparent layer: transparent counts as paper, alpha is kept
    floating = _rgba([clear] * 90 + [(20, 20, 20, 128)] * 10)
    guide, inverted = editing.sketch_guide(floating)
    assert inverted and guide[:4] == bytes((255, 255, 255, 0)) and guide[-4:] == bytes((235, 235, 235, 128))
    assert editing.sketch_guide(lines, invert=True)[0][:4] == bytes((255, 255, 255, 255))


def test_sketch_guide_over_black_equals_flatten_on_white_then_invert():
    """The server lays the control over black; for an inverted guide that is the flattened, inverted sketch."""
    for c in (0, 37, 128, 255):
        for a in (0, 1, 77, 200, 255):
            guide, _ = editing.sketch_guide(bytes((c, c, c, a)), invert=True)
            over_black = (guide[0] * a + 127) // 255
            flattened = (c * a + 255 * (255 - a) + 127) // 255
            assert over_black == 255 - flattened, (c, a)


def test_plan_upscale():
    params = editing.params_from_ui("crisp", "", 0.3, 3, -1.0, 5, 1, "")
    plan = editing.plan_upscale(bytes(8 * 6 * 4), 8, 6, params, 2)
    m = plan.request.to_message()
    assert (m["upscale"], m["strength"], m["seed"], m["x"], m["y"]) == (2, 0.3, 5, 0, 0)
    assert (plan.image.width, plan.image.height) == (8, 6) and plan.mask is None
    assert editing.plan_upscale(bytes(4), 1, 1, Params("", strength=1.0), 4).request.strength == 0.99
    assert "upscale" in editing.check_request(editing.plan_upscale(bytes(4), 1, 1, params, 3))


def test_feature_choices_from_welcome():
    welcome = {"models": [{"id": "sd", "family": "sd1"}, {"id": "xl", "family": "sdxl"}], "default_model": "sd",
               "loras": ["ink.safetensors"], "control_models": [], "refiner": ["ref"]}
    # an older server's welcome without per-model features: every control shows, for every model
    assert editing.feature_choices(welcome) == {"models": ["sd", "xl"], "default_model": "sd",
                                                "loras": ["ink.safetensors"], "control_models": [],
                                                "refiner": True, "refiner_models": ["sd", "xl"], "family": "sd1",
                                                "negative_prompt": True, "scheduler": True, "variations": True,
                                                "upscalers": []}
    welcome["models"][0]["features"] = ["negative_prompt", "scheduler", "loras"]
    welcome["models"][1]["features"] = ["negative_prompt", "refiner"]
    choices = editing.feature_choices(welcome)
    assert choices["refiner_models"] == ["xl"] and not choices["refiner"] and not choices["variations"]
    assert editing.feature_choices(None)["models"] == [] and not editing.feature_choices({})["refiner"]


def test_history_label_and_params_from_history():
    entry = {"job": "j1", "created": 0, "images": [{"seed": 7, "x": 0, "y": 0, "width": 64, "height": 48}],
             "parameters": {"prompt": "a  red cat", "negative_prompt": "dog", "mode": "img2img", "seeds": [7],
                            "steps": 3, "guidance": 5.0, "scheduler": "euler", "strength": 0.6, "model": "tiny",
                            "loras": [{"name": "ink.safetensors", "weight": 0.5}], "variation_seed": 9,
                            "variation_strength": 0.2}}
    label = editing.history_label(entry)
    assert "img2img · a red cat · seed 7 · 64×48" in label
    params, features = editing.params_from_history(entry)
    assert (params.prompt, params.negative_prompt, params.seed, params.batch, params.steps, params.strength) == \
        ("a  red cat", "dog", 7, 1, 3, 0.6)
    assert (params.scheduler, params.model, features.variation_seed, features.variation_strength) == \
        ("euler", "tiny", 9, 0.2)
    assert features.loras == [{"name": "ink.safetensors", "weight": 0.5}] and features.control_model is None
    assert editing.params_from_history({"parameters": {"scheduler": "default"}})[0].scheduler is None


def test_client_task_history_and_fetch_on_a_real_server(tiny_sd_path, tmp_path):
    """ClientTask runs a generate; the stored result shows up in ``history`` and ``fetch`` returns it."""
    import threading

    from easel.server.engine import Engine
    from easel.server.results import ResultStore
    from helpers.server_harness import inprocess_server

    engine = Engine([str(tiny_sd_path)], device="cpu", dtype="float32")
    with inprocess_server(engine, store=ResultStore(tmp_path)) as (url, _app):
        plan = editing.apply_features(editing.plan_request(editing.EditorState(64, 64), Params("a cat", steps=2,
                                                                                                seed=4)),
                                      editing.Features(variation_seed=5, variation_strength=0.5))
        done, out = threading.Event(), {}
        task = editing.ClientTask(url, editing.generate_work(plan), job=plan.request.job,
                                  on_done=lambda value, error: (out.update(value=value, error=error), done.set()))
        task.start()
        assert done.wait(60) and out["error"] is None
        result = out["value"]
        assert result.parameters["variation_seed"] == 5
        assert editing.result_record(result)["job"] == plan.request.job
        with Client(url, image_format="rgba") as client:
            history = editing.fetch_history(client, 5)
            assert history[0]["job"] == plan.request.job
            again = editing.fetch_result(client, history[0]["job"])
            assert again.images[0].image.data == result.images[0].image.data
            with pytest.raises(editing.JobFailed, match="no finished result"):
                editing.fetch_result(client, "no-such-job")
        done.clear()
        editing.ClientTask("ws://127.0.0.1:9", lambda c: None, on_done=lambda v, e: (out.update(error=e),
                                                                                    done.set())).start()
        assert done.wait(30) and "cannot reach" in out["error"]
