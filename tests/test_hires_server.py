"""The second pass and exact size through the real server, client and CLI (tiny SD, native 64 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from easel.client.connection import new_job_id
from easel.client.protocol import GenerateRequest, Image
from helpers.pictures import box_mask, pixels, rgba_image, texture

torch.set_num_threads(1)


def req(**kw) -> GenerateRequest:
    kw.setdefault("prompt", "a red circle")
    kw.setdefault("steps", 4)
    kw.setdefault("seed", 5)
    return GenerateRequest(job=new_job_id(), **kw)


def test_stored_png_says_size_and_hires(client, served):
    events = []
    r = client.generate(req(width=160, height=128), on_progress=events.append)
    assert (r.images[0].image.width, r.images[0].image.height) == (160, 128)
    assert r.parameters["second_pass"]["tiles"] > 1
    steps = [e.step for e in events if e.stage == "denoise"]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] == events[-1].total
    text = PILImage.open(served[1].store.folder / r.job / "image-0.png").text["parameters"]
    upscale = r.parameters["second_pass"]["upscale"]
    assert f"Size: {'x'.join(map(str, r.parameters['work_size']))}," in text
    assert f"Denoising strength: 0.35, Mode: txt2img, Hires upscale: {upscale}, Hires resize: 160x128" in text


def test_selection_through_the_server_is_bit_exact_outside_the_blend(client):
    picture = texture(224, 160, seed=1)
    mask = box_mask(224, 160, (40, 30, 120, 90))
    r = client.generate(req(feather=5, x=10, y=20, canvas_width=300, canvas_height=200), rgba_image(picture),
                        Image.gray(224, 160, mask.tobytes()))
    assert r.parameters["second_pass"]["tiles"] >= 1
    item = r.images[0]
    layer = pixels(item.image)
    x, y = item.x - 10, item.y - 20  # the layer's place in the sent picture
    region = picture[y:y + layer.shape[0], x:x + layer.shape[1]]
    outside = layer[..., 3] == 0
    assert np.array_equal(layer[outside][:, :3], region[outside][:, :3])  # transparent pixels carry the original
    assert (layer[..., 3][mask[y:y + layer.shape[0], x:x + layer.shape[1]] == 255] == 255).all()


def cancel_when(client, request, predicate):
    """Submit, cancel at the first progress event ``predicate`` accepts; (final event, step then, last step)."""
    job = client.submit(request)
    at_cancel = last = None
    for event in client.events(timeout=120):
        if event.type == "progress" and event.data["stage"] == "denoise":
            last = event.data["step"]
            if at_cancel is None and predicate(event.data):
                at_cancel = last
                client.cancel(job)
        if event.type in ("cancelled", "result", "error"):
            return event, at_cancel, last, job
    raise AssertionError("no end event")


@pytest.mark.parametrize("where", ["first", "second"])
def test_cancel_in_either_pass(client, where):
    """Cancelled within a step, in the first pass or among the second pass's tiles."""
    first = lambda d: d["step"] == 2 and not d["message"]  # noqa: E731
    second = lambda d: d["message"].startswith("second pass, tile 2/")  # noqa: E731
    event, at_cancel, last, job = cancel_when(client, req(width=256, height=256, steps=12),
                                              first if where == "first" else second)
    assert event.type == "cancelled" and event.job == job
    assert at_cancel is not None and last - at_cancel <= 1


def test_cli_flags(served, tmp_path):
    from easel.cli import main

    url = served[0]
    base = ["generate", "--url", url, "--prompt", "a red circle", "--seed", "3", "--steps", "2", "--quiet",
            "--width", "160", "--height", "160"]
    assert main([*base, "--out", str(tmp_path / "two.png")]) == 0
    two = PILImage.open(tmp_path / "two.png")
    assert two.size == (160, 160) and "Hires upscale: 2.5, Hires resize: 160x160" in two.text["parameters"]
    assert main([*base, "--hires-strength", "0.3", "--out", str(tmp_path / "soft.png")]) == 0
    assert "Denoising strength: 0.3" in PILImage.open(tmp_path / "soft.png").text["parameters"]
    assert main([*base, "--hires", "off", "--out", str(tmp_path / "one.png")]) == 0
    one = PILImage.open(tmp_path / "one.png")
    assert one.size == (160, 160) and "Hires" not in one.text["parameters"] and "Size: 64x64" in one.text["parameters"]
    assert main([*base, "--exact-size", "--out", str(tmp_path / "exact.png")]) == 0
    exact = PILImage.open(tmp_path / "exact.png")
    assert exact.size == (160, 160) and "Size: 160x160" in exact.text["parameters"]
    assert "Hires" not in exact.text["parameters"]


def test_cli_rejects_bad_values_naming_the_flag(served, tmp_path, capsys):
    from easel.cli import main

    base = ["generate", "--url", served[0], "--prompt", "x", "--out", str(tmp_path / "x.png")]
    assert main([*base, "--hires", "sometimes"]) == 2
    assert "(--hires)" in capsys.readouterr().err
    assert main([*base, "--hires-strength", "2"]) == 2
    assert "(--hires-strength)" in capsys.readouterr().err


def test_cli_help_lists_the_flags(capsys):
    from easel.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "-h"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--hires auto|on|off" in help_text and 'one of auto, on, off; default "auto"' in help_text
    assert "--hires-strength F" in help_text and "default per model family" in help_text
    assert "--exact-size" in help_text


# ----------------------------------------------------------------------------- plugins and live mode

def test_plugin_features_reach_the_server_and_come_back_from_history(client):
    from easel.client import editing
    from easel.client.editing import Params

    plain = editing.features_from_ui()
    assert (plain.hires, plain.hires_strength, plain.exact_size) == ("auto", None, False)
    planned = editing.plan_request(editing.EditorState(160, 128), Params("a red circle", seed=4, steps=4))
    features = editing.features_from_ui(second_pass=True, hires_strength=0.3)
    r = client.generate(editing.apply_features(planned, features).request)
    assert r.parameters["second_pass"]["strength"] == 0.3 and r.parameters["hires_strength"] == 0.3
    assert "2nd pass" in editing.history_label({"parameters": r.parameters, "images": []})
    _, again = editing.params_from_history({"parameters": r.parameters})
    assert (again.hires, again.hires_strength, again.exact_size) == ("auto", 0.3, False)
    planned = editing.plan_request(editing.EditorState(160, 128), Params("a red circle", seed=4, steps=4))
    off = editing.features_from_ui(second_pass=False, exact_size=True)
    r = client.generate(editing.apply_features(planned, off).request)
    assert "second_pass" not in r.parameters and r.parameters["work_size"] == [160, 128]
    _, again = editing.params_from_history({"parameters": r.parameters})
    assert (again.hires, again.exact_size) == ("off", True)


@pytest.mark.parametrize("size, exact", [((40, 32), True), ((160, 128), False)])
def test_live_frames_run_the_faster_size_in_one_pass(client, size, exact):
    """Below the native area a live frame runs at its own size; above it at the native area; never two passes."""
    from easel.client import editing
    from easel.client.editing import Params

    model = editing.find_model(client.welcome, None)
    w, h = size
    state = editing.EditorState(w, h, texture(w, h).tobytes(), (0, 0, w, h))
    planned = editing.plan_live(state, Params("a blue lake", strength=0.6, seed=3, steps=4), model)
    assert planned.request.exact_size is exact and planned.request.hires == "off"
    planned.request.replace = False  # a live frame is not stored; the parameters are what matter here
    r = client.generate(planned.request, planned.image)
    work = r.parameters["work_size"]
    assert "second_pass" not in r.parameters and work[0] * work[1] <= max(w * h, 64 * 64)
    assert (work == [w, h]) is exact
    assert editing.plan_live(state, Params("x", strength=0.6), None).request.exact_size is False  # unknown model


def test_auto_skips_the_demo_models_second_pass_and_on_forces_it():
    """The toy demo model profits from no second pass: `auto` resamples its 64² picture, `on` refines."""
    from easel.client.protocol import GenerateRequest
    from easel.server.families import Family
    from easel.server.hires import second_pass_wanted
    from easel.server.imaging.region import plan_generation

    plan = plan_generation(GenerateRequest(job="j", prompt="p", width=512, height=512), None, None, (64, 64))
    assert plan.wants_second_pass

    def wanted(hires: str, family: Family) -> bool:
        return second_pass_wanted(GenerateRequest(job="j", prompt="p", hires=hires), plan, family)

    assert [wanted(h, Family.DEMO) for h in ("auto", "on", "off")] == [False, True, False]
    assert [wanted(h, Family.SD1) for h in ("auto", "on", "off")] == [True, True, False]
