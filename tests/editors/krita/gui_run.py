"""The GUI half of the Krita tests (test_krita_gui.py, test_krita_live.py, test_krita_flux.py): running
Krita under Xvfb with the self-test plugin, and the oracles (the same requests asked directly through
``easel.client.connection``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from editor_site import Scratch, install_plugin
from krita_host import add_test_plugin, krita_command, need, need_krita, paste, scratch, tail, xvfb

from easel.client import editing
from easel.client.connection import Client, Result, new_job_id
from easel.client.protocol import GenerateRequest, Image
from easel.client.send_region import send_region

HERE = Path(__file__).resolve().parent
OBJECT_NAMES = ["easel_prompt", "easel_negative", "easel_strength", "easel_steps", "easel_seed", "easel_batch",
                "easel_model", "easel_generate_button", "easel_cancel_button", "easel_progress"]
W, H = 100, 72  # the GUI document; the width is not a multiple of 8 on purpose
LW, LH = 96, 64  # the live document


def scenarios() -> list[dict]:
    common = dict(negative="blurry", steps=4, guidance=None)
    return [
        dict(common, name="generate", prompt="a red circle on blue", strength=100, seed=1234, batch=2),
        dict(common, name="refine", prompt="a green square", strength=60, seed=77, batch=1, button=True),
        dict(common, name="selection", prompt="a yellow star", strength=100, seed=99, batch=1,
             selection=[58, 22, 30, 26], feather=3),
    ]


@contextlib.contextmanager
def tiny_server(model, root: Path):
    """``easel serve`` with the tiny model, a tiny LoRA (``ink.safetensors``), a tiny ControlNet
    (``scribble``) and its own result store (for History); yields its URL."""
    from helpers.server_harness import running_server
    from helpers.tiny_models import build_tiny_controlnet, write_tiny_lora

    write_tiny_lora(model, root / "loras" / "ink.safetensors", seed=1, text_encoder=True)
    control = build_tiny_controlnet(model, root / "scribble")
    with running_server([str(model)], "--loras-dir", str(root / "loras"), "--control-model", control,
                        "--output-dir", str(root / "results"), log_path=root / "server.log") as url:
        yield url


def power_spec() -> dict:
    """The "More" group's run (easel_selftest/power_part.py)."""
    common = dict(negative="", steps=4, guidance=None, batch=1)
    return {"lora": dict(common, prompt="ink cat", strength=100, seed=321, loras_text="ink:0.8",
                         variation_seed=4242, variation_strength=0.3),
            "sketch": dict(common, prompt="a house", strength=100, seed=5, control_strength=0.8),
            "sizes": dict(common, prompt="a lake", strength=100, seed=77, hires_strength=0.3),
            "upscale": dict(common, prompt="crisp", strength=30, seed=11)}


def live_spec(stroke_s: float = 1.5) -> dict:
    """The live part's run (easel_selftest/live_part.py)."""
    return {"width": LW, "height": LH, "background_bgra": [230, 230, 230, 255], "sketch_box": [10, 10, 30, 20],
            "sketch_bgra": [200, 60, 40, 255], "stroke_bgra": [30, 30, 200, 255], "stroke": [12, 36, 6],
            "stroke_s": stroke_s, "dab_s": 0.1, "min_frames": 2, "timeout": 60, "prompt2": "a red boat at dusk", "dead_url": "ws://127.0.0.1:9",
            "params": dict(prompt="a blue lake", negative="", strength=60, steps=0, guidance=None, seed=0,
                           seed_random=True, batch=3)}


def gui_spec(url: str) -> dict:
    """What the self-test plugin does, in order (easel_selftest/driver.py)."""
    return {"url": url, "dead_url": "ws://127.0.0.1:9", "width": W, "height": H,
            "background_bgra": [200, 170, 140, 255], "sketch_box": [20, 14, 40, 30], "sketch_bgra": [40, 40, 220, 255],
            "scenarios": scenarios(), "object_names": OBJECT_NAMES, "timeout": 90, "quit_wait": 60,
            "long_steps": 150, "long_batch": 4,  # the job to cancel, and the one running when Krita quits
            "live": live_spec(), "power": power_spec()}


def flux_spec(url: str) -> dict:
    """test_krita_flux.py's run: the controls the model is offered with, then the three uses; no cancel,
    power, live or quit-mid-job parts (the scenarios keep their negative prompt: the plugin must drop it)."""
    spec = {key: value for key, value in gui_spec(url).items() if key not in ("live", "power")}
    return dict(spec, parts=["offered", "uses"])


def krita_gui_session(request, base: Path, spec: dict, url: str, shot: Path) -> Iterator[SimpleNamespace]:
    """A pytest fixture's body: one Krita GUI run of ``spec`` against ``url`` (``run_krita_gui``), its
    scratch folder (under ``base``, or in the chroot) removed afterwards."""
    tools = (need_krita(request, "krita"), need(request, "Xvfb"), need(request, "import"))
    work = scratch("krita-gui-", base)
    try:
        yield run_krita_gui(tools, work, spec, url, shot)
    finally:
        if work.root is not None:
            work.cleanup()


def run_krita_gui(tools, work: Scratch, spec: dict, server_url: str, shot: Path) -> SimpleNamespace:
    """Install the plugin + self-test into a throw-away HOME, run Krita's GUI on Xvfb, return its result."""
    krita, xvfb_bin, importer = tools
    home, out = work.host / "home", work.host / "out"
    out.mkdir(parents=True)
    pykrita, kritarc = home / ".local" / "share" / "krita" / "pykrita", home / ".config" / "kritarc"
    install_plugin("krita", pykrita, kritarc)
    add_test_plugin(pykrita, kritarc, "easel_selftest")
    (out / "spec.json").write_text(json.dumps(spec))
    log = work.host / "krita.log"
    timings: dict[str, float] = {}
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    t0 = time.monotonic()
    with xvfb(xvfb_bin) as display, open(log, "w") as fh:
        cmd, env = krita_command(work, [krita, "--nosplash"], DISPLAY=display, EASEL_URL=server_url,
                                 EASEL_SELFTEST=work.path("out"))
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None and not (out / "ready").exists():
                if (out / "result.json").exists() and "error" in json.loads((out / "result.json").read_text()):
                    break
                time.sleep(0.25)
            timings["until_ready_s"] = time.monotonic() - t0
            if (out / "ready").exists():
                time.sleep(1.5)  # let the canvas and the docker repaint
                subprocess.run([importer, "-display", display, "-window", "root", str(shot)], check=False,
                               timeout=60, env={**os.environ, "DISPLAY": display})
            (out / "quit").touch()
            t1 = time.monotonic()
            try:
                proc.wait(60)
                timings["quit_s"] = time.monotonic() - t1
            except subprocess.TimeoutExpired:
                timings["quit_s"] = float("inf")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    timings["total_s"] = time.monotonic() - t0
    result_path = out / "result.json"
    if not result_path.exists():
        pytest.fail(f"the in-Krita self-test wrote no result ({timings}); Krita log:\n{tail(log)}")
    result = json.loads(result_path.read_text())
    print(f"Krita {result.get('krita_version')} GUI run: {timings}")
    return SimpleNamespace(result=result, out=out, home=home, log=log, shot=shot, timings=timings,
                           url=server_url, spec=spec, exit_code=proc.returncode)


def ask_server_directly(gui, spec: dict, canvas: bytes, mask: bytes, W: int, H: int):
    """The oracle: the same request, built here from the canvas the self-test dumped, sent by easel.client.connection."""
    selected = bool(mask) and any(mask)
    mode = "inpaint" if selected else ("img2img" if spec["strength"] < 100 else "txt2img")
    common = dict(job=new_job_id(), prompt=spec["prompt"], negative_prompt=spec["negative"], steps=spec["steps"],
                  guidance=spec["guidance"], seed=spec["seed"], batch=spec["batch"], model=gui.result["model"],
                  canvas_width=W, canvas_height=H)
    image = mask_image = None
    if mode == "txt2img":
        request = GenerateRequest(width=W, height=H, **common)
    else:
        x, y, w, h = send_region(editing.selection_bounds(mask, W, H), (W, H)) if selected else (0, 0, W, H)
        request = GenerateRequest(strength=spec["strength"] / 100, x=x, y=y, **common)
        image = Image.rgba(w, h, editing.crop_bytes(canvas, W, 4, x, y, w, h))
        if selected:
            mask_image = Image.gray(w, h, editing.crop_bytes(mask, W, 1, x, y, w, h))
    with Client(gui.url, image_format="rgba") as client:  # without what the model cannot use, as the plugin
        return mode, client.generate(editing.fit_to_model(request, client.welcome), image, mask_image)


def ui_params(sc: dict, model: str) -> editing.Params:
    """What the docker reads from its widgets for a self-test scenario."""
    return editing.params_from_ui(sc["prompt"], sc.get("negative", ""), sc["strength"] / 100, sc["steps"],
                                  -1.0 if sc.get("guidance") is None else sc["guidance"], sc["seed"], sc["batch"],
                                  model)


def ask_power(gui, part: str, W: int, H: int):
    """The oracle for power_part.py's jobs: the request built from the spec and the dumped canvas
    with the shared helpers (the LoRA picked as the plugin's text, the guide's polarity…)."""
    sc, model = gui.spec["power"]["lora" if part == "vary" else part], gui.result["model"]
    params = ui_params(sc, model)
    if part == "upscale":
        canvas = (gui.out / "power-upscale-canvas.rgba").read_bytes()
        planned = editing.plan_upscale(canvas, W, H, params, 2)
        control = None
    else:
        planned = editing.plan_request(editing.EditorState(W, H), params)  # text to image at canvas size
        features = editing.Features(control_strength=sc.get("control_strength", 1.0))
        control = None
        if part == "lora":
            features.loras = [{"name": "ink.safetensors", "weight": 0.8}]
            features.variation_seed, features.variation_strength = sc["variation_seed"], sc["variation_strength"]
        if part == "vary":  # the lora scenario's prompt and seed, no LoRA, the variation the button drew
            vary = gui.result["power"]["vary"]
            features.variation_seed, features.variation_strength = int(vary["variation_seed"]), 0.2
        if part == "sizes":  # 2nd pass off, its strength, exact size
            features.hires, features.hires_strength, features.exact_size = "off", sc["hires_strength"], True
        if part == "sketch":
            features.control_model = "scribble"
            guide, _ = editing.sketch_guide((gui.out / "power-sketch-canvas.rgba").read_bytes())
            control = Image.rgba(W, H, guide)
        planned = editing.apply_features(planned, features, control)
    planned.request.job = new_job_id()
    with Client(gui.url, image_format="rgba") as client:
        return client.generate(planned.request, planned.image, planned.mask, control=control)


def scenario(gui, name: str) -> dict:
    if "error" in gui.result:
        pytest.fail(f"the self-test failed inside Krita:\n{gui.result['error']}")
    for record in gui.result["scenarios"]:
        if record["name"] == name:
            return record
    pytest.fail(f"scenario {name} did not run; events: {gui.result.get('events')}\nKrita log:\n{tail(gui.log)}")


def check_scenario(gui, W: int, H: int, name: str, expect_mode: str) -> dict:
    return checked_scenario(gui, W, H, name, expect_mode)[0]


def checked_scenario(gui, W: int, H: int, name: str, expect_mode: str) -> tuple[dict, Result]:
    """Scenario ``name`` finished and its layers equal the direct request's images at their offsets;
    (what the self-test recorded, the direct request's result)."""
    record = scenario(gui, name)
    spec = next(s for s in gui.spec["scenarios"] if s["name"] == name)
    assert record["done"] and record["started_busy"], f"{name}: did not finish: {record['status']}"
    assert len(record["new_layers"]) == spec["batch"], f"{name}: {record['status']}; stack {record['stack']}"
    assert all(record["unchanged"].values()), f"{name}: an existing layer changed"
    above = record["stack"].index(record["active_before"]) + 1
    assert [layer["index"] for layer in record["new_layers"]] == list(range(above, above + spec["batch"])), \
        f"{name}: new layers must go right above the active layer {record['active_before']!r}: {record['stack']}"
    canvas = (gui.out / f"{name}-canvas.rgba").read_bytes()
    mask = (gui.out / f"{name}-mask.gray").read_bytes()
    mode, result = ask_server_directly(gui, spec, canvas, mask, W, H)
    assert mode == expect_mode
    for i, (layer, image) in enumerate(zip(record["new_layers"], result.images, strict=True)):
        assert layer["name"] == editing.layer_name(spec["prompt"], image.seed)
        assert image.seed == spec["seed"] + i
        assert layer["type"] == "paintlayer" and layer["visible"]
        got = (gui.out / layer["file"]).read_bytes()
        want = paste(image, W, H)
        assert len(got) == len(want)
        diff = sum(1 for a, b in zip(got, want) if a != b)
        assert diff == 0, f"{name} layer {i}: {diff} bytes differ from the server's own result at ({image.x}, {image.y})"
    assert any(value > 0 for value, _ in record["progress_seen"]), "the progress bar never moved"
    assert f"last seed: {spec['seed']}" == record["last_seed"]
    return record, result


def recorded(gui, group: str, name: str) -> dict:
    """What the self-test recorded for part ``name`` of ``group`` ("power", "controls" …); the test fails with
    Krita's error, or the events and the log's tail when the part did not run."""
    if "error" in gui.result:
        pytest.fail(f"the self-test failed inside Krita:\n{gui.result['error']}")
    record = gui.result.get(group, {}).get(name)
    if record is None:
        pytest.fail(f"{group} part {name!r} did not run; events: {gui.result.get('events')}\n{tail(gui.log)}")
    return record


def power(gui, part: str) -> dict:
    return recorded(gui, "power", part)


def check_power_layer(gui, W: int, H: int, record: dict, part: str):
    assert record["done"] and record["started_busy"] and record["unchanged"], record["status"]
    assert len(record["layers"]) == 1, record["status"]
    result = ask_power(gui, part, W, H)
    image = result.images[0]
    sc = gui.spec["power"]["lora" if part == "vary" else part]
    assert record["layers"][0]["name"] == editing.layer_name(sc["prompt"], sc["seed"]) and image.seed == sc["seed"]
    got = (gui.out / record["layers"][0]["file"]).read_bytes()
    assert got == paste(image, W, H), f"{part}: the layer differs from the server's own result"
    return result


def run_adapter_checks(kritarunner: str, work: Scratch) -> dict:
    """tests/editors/krita/adapter_checks.py in a headless ``kritarunner``; its result dict."""
    install_plugin("krita", work.host / "pykrita", work.host / "kritarc")  # a kritarc Krita never reads
    checks = work.host / "checks"
    checks.mkdir()
    for name in ("adapter_checks.py", "live_checks.py"):
        shutil.copy2(HERE / name, checks / name)
    log = work.host / "kritarunner.log"
    cmd, env = krita_command(work, [kritarunner, "-s", "adapter_checks", "-f", "main", work.path("out")],
                             QT_QPA_PLATFORM="offscreen", PYTHONPATH=f"{work.path('pykrita')}:{work.path('checks')}")
    t0 = time.monotonic()
    with open(log, "w") as fh:
        subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=240, check=False)
    result = work.host / "out" / "adapter.json"
    if not result.exists():
        pytest.fail(f"kritarunner wrote no result after {time.monotonic() - t0:.0f} s; log:\n{tail(log)}")
    found = json.loads(result.read_text())
    print(f"Krita {found.get('krita_version')} (Python {found['python'].split()[0]}) adapter checks: "
          f"{time.monotonic() - t0:.1f} s")
    return found
