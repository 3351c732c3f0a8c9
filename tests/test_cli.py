"""The `easel` command end to end: a real `easel serve` subprocess and real client commands."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image as PILImage

from easel.client.protocol import GenerateRequest, request_fields
from helpers.cli_runs import canvas_and_mask, easel, textured
from helpers.server_harness import REPO, running_server


def test_generate_writes_png_with_progress(url, tmp_path):
    out = tmp_path / "circle.png"
    r = easel("generate", "--url", url, "--prompt", "a red circle", "--seed", "7", "--steps", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "seed 7" in r.stdout
    assert "generating: denoising 3/3" in r.stderr  # progress is shown
    img = PILImage.open(out)
    assert img.size == (64, 64) and "Seed: 7" in img.text.get("parameters", "") or img.size == (64, 64)


def test_batch_writes_numbered_files(url, tmp_path):
    out = tmp_path / "b.png"
    r = easel("generate", "--url", url, "--prompt", "x", "--seed", "1", "--steps", "2", "--batch", "2",
              "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = (np.asarray(PILImage.open(tmp_path / f"b-{i}.png")) for i in (1, 2))
    assert a.shape == b.shape == (64, 64, 4) and not np.array_equal(a, b)


def test_img2img_and_mask_from_files(url, tmp_path):
    PILImage.new("RGB", (96, 64), (200, 30, 30)).save(tmp_path / "in.png")
    mask = PILImage.new("L", (96, 64), 0)
    mask.paste(255, (40, 16, 80, 48))
    mask.save(tmp_path / "mask.png")
    r = easel("generate", "--url", url, "--prompt", "x", "--steps", "2", "--image", str(tmp_path / "in.png"),
              "--out", str(tmp_path / "i2i.png"))
    assert r.returncode == 0, r.stderr
    assert PILImage.open(tmp_path / "i2i.png").size == (96, 64)
    r = easel("generate", "--url", url, "--prompt", "x", "--steps", "2", "--image", str(tmp_path / "in.png"),
              "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "inp.png"))
    assert r.returncode == 0, r.stderr
    assert "at " in r.stdout  # the layer's document offset is reported


@pytest.mark.parametrize("args, field", [
    (["--strength", "2"], "strength"), (["--model", "nope"], "model"), (["--steps", "0"], "steps"),
    (["--scheduler", "warp"], "scheduler"), (["--image", "/nonexistent.png"], "image"),
])
def test_bad_input_exits_nonzero_with_one_line(url, tmp_path, args, field):
    r = easel("generate", "--url", url, "--prompt", "x", "--out", str(tmp_path / "o.png"), *args)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("easel generate:")]
    assert len(lines) == 1 and field in lines[0], r.stderr


def test_server_down_is_a_clear_error(tmp_path):
    r = easel("generate", "--url", "ws://127.0.0.1:9", "--prompt", "x", "--out", str(tmp_path / "o.png"))
    assert r.returncode == 1 and "cannot reach" in r.stderr


def test_models_lists_the_served_model(url):
    r = easel("models", "--url", url)
    assert r.returncode == 0, r.stderr
    assert "(default)" in r.stdout and "native 64x64" in r.stdout


def test_serve_refuses_network_bind_without_token():
    r = easel("serve", "--host", "0.0.0.0", "--port", "0", timeout=30)
    assert r.returncode == 2 and "--token" in r.stderr


def test_install_and_package_plugins(tmp_path):
    kritarc = tmp_path / "kritarc"
    kritarc.write_text("[General]\nkey=value\n")
    r = easel("install-plugin", "krita", "--dest", str(tmp_path / "pykrita"), "--kritarc", str(kritarc))
    assert r.returncode == 0, r.stderr
    plugin = tmp_path / "pykrita" / "easel_krita"
    assert (tmp_path / "pykrita" / "easel_krita.desktop").exists() and (plugin / "__init__.py").exists()
    for rel in ("shared/protocol.py", "shared/connection.py", "shared/editing/__init__.py", "shared/editing/live.py", "vendor/websockets/__init__.py"):
        assert (plugin / rel).exists(), rel
    assert not list(plugin.rglob("*.so")), "the bundled websockets must be pure Python"
    assert "enable_easel_krita=true" in kritarc.read_text() and "key=value" in kritarc.read_text()
    r = easel("install-plugin", "gimp", "--dest", str(tmp_path / "plug-ins"))
    main = tmp_path / "plug-ins" / "easel_gimp" / "easel_gimp.py"
    assert r.returncode == 0 and main.stat().st_mode & 0o111
    r = easel("package-plugin", "krita", "--out", str(tmp_path / "k.zip"))
    names = zipfile.ZipFile(io.BytesIO((tmp_path / "k.zip").read_bytes())).namelist()
    assert r.returncode == 0 and "easel_krita.desktop" in names and "easel_krita/shared/connection.py" in names


@pytest.mark.parametrize("before, after", [
    ("", "[python]\nenable_easel_krita=true\n"),
    ("topkey=1\n[General]\na=b\n", "topkey=1\n[General]\na=b\n\n[python]\nenable_easel_krita=true\n"),
    ("x=1\n[python]\nenable_other=true\n\n[Z]\nq=2\n", "x=1\n[python]\nenable_other=true\nenable_easel_krita=true\n\n[Z]\nq=2\n"),
    ("[python]\nenable_easel_krita=false\n", "[python]\nenable_easel_krita=true\n"),
    ("[python]\nenable_a=true\n", "[python]\nenable_a=true\nenable_easel_krita=true\n"),
])
def test_kritarc_edit_keeps_krita_lines(tmp_path, before, after):
    """Krita's own kritarc has keys before any [group]: a line edit keeps them exactly."""
    from easel.plugin_install import enable_in_kritarc

    rc = tmp_path / "kritarc"
    if before:
        rc.write_text(before)
    enable_in_kritarc(rc)
    assert rc.read_text() == after
    enable_in_kritarc(rc)
    assert rc.read_text() == after  # idempotent


def test_install_plugin_with_empty_xdg_uses_home_not_the_cwd(tmp_path):
    """Regression: XDG_CONFIG_HOME="" made `easel install-plugin gimp` write ./GIMP/3.0/… in the cwd."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": "", "XDG_DATA_HOME": "", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(REPO / "server")}
    for editor, where in (("gimp", ".config/GIMP/3.0/plug-ins/easel_gimp"),
                          ("krita", ".local/share/krita/pykrita/easel_krita")):
        r = subprocess.run([sys.executable, "-m", "easel", "install-plugin", editor], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and str(home / where) in r.stdout, r.stderr
    assert list(cwd.iterdir()) == []



@pytest.mark.parametrize("flag, want", [([], ["3.0", "3.2"]), (["--gimp-version", "3.2"], ["3.2"])])
def test_install_plugin_gimp_goes_to_each_existing_profile_or_the_one_asked(tmp_path, flag, want):
    home = tmp_path / "home"
    for version in ("3.0", "3.2"):
        (home / ".config" / "GIMP" / version).mkdir(parents=True)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "server")}
    r = subprocess.run([sys.executable, "-m", "easel", "install-plugin", "gimp", *flag], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for version in ("3.0", "3.2"):
        main = home / ".config" / "GIMP" / version / "plug-ins" / "easel_gimp" / "easel_gimp.py"
        assert main.exists() == (version in want)
        assert (str(main.parent) in r.stdout) == (version in want)
    r = subprocess.run([sys.executable, "-m", "easel", "install-plugin", "krita", "--gimp-version", "3.2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--gimp-version" in r.stderr

# ----------------------------------------------------------------------------- what `easel generate` writes
def test_inpaint_writes_the_whole_picture_and_layer_writes_the_patch(url, tmp_path):
    common = ["generate", "--url", url, "--prompt", "a blue square", "--seed", "11", "--steps", "2", "--quiet",
              "--feather", "4", *canvas_and_mask(tmp_path)]
    r = easel(*common, "--out", str(tmp_path / "fixed.png"))
    assert r.returncode == 0, r.stderr
    r2 = easel(*common, "--layer", "--out", str(tmp_path / "patch.png"))
    assert r2.returncode == 0, r2.stderr
    full, patch = PILImage.open(tmp_path / "fixed.png"), PILImage.open(tmp_path / "patch.png")
    assert full.size == (96, 64) and full.mode == "RGB"  # an RGB canvas comes back RGB, whole
    assert patch.mode == "RGBA"
    x, y = int(patch.text["easel.x"]), int(patch.text["easel.y"])
    w, h = patch.size
    assert f"(regenerated {w}x{h} at {x},{y})" in r.stdout and f"{w}x{h}  at {x},{y}" in r2.stdout
    assert 40 - 5 <= x <= 40 and 16 - 5 <= y <= 16 and x + w >= 80 and y + h >= 48  # the selection + blend
    assert x + w <= 80 + 5 and y + h <= 48 + 5
    before, after = textured(96, 64), np.asarray(full)
    placed = np.zeros((64, 96, 4), np.uint8)
    placed[y:y + h, x:x + w] = np.asarray(patch)
    alpha = placed[..., 3]
    assert np.array_equal(after[alpha == 0], before[alpha == 0])  # outside the blend: bit-exact input
    assert (alpha[16:48, 40:80] == 255).all()
    assert np.array_equal(after[alpha == 255], placed[..., :3][alpha == 255])  # inside: the patch itself
    assert not np.array_equal(after[16:48, 40:80], before[16:48, 40:80])  # and the selection was regenerated
    for img in (full, patch):  # Size: what the model ran at, the 88x64 region around the selection (1:1)
        text = img.text["parameters"]
        assert text.startswith("a blue square\n") and "Seed: 11" in text and "Size: 88x64" in text, text
        assert "Steps: 2" in text and "Mode: inpaint" in text


def test_every_written_png_carries_its_parameters(url, tmp_path):
    r = easel("generate", "--url", url, "--prompt", "x", "--negative", "blur", "--seed", "5", "--steps", "2",
              "--batch", "2", "--out", str(tmp_path / "b.png"), "--quiet")
    assert r.returncode == 0, r.stderr
    for i, seed in ((1, 5), (2, 6)):
        text = PILImage.open(tmp_path / f"b-{i}.png").text["parameters"]
        assert text.splitlines()[:2] == ["x", "Negative prompt: blur"] and f"Seed: {seed}," in text


def test_batch_over_the_protocol_range_names_it(url, tmp_path):
    r = easel("generate", "--url", url, "--prompt", "x", "--batch", "100", "--out", str(tmp_path / "o.png"))
    assert r.returncode == 2
    assert "'batch' must be between 1 and 64 (got 100) (--batch)" in r.stderr, r.stderr


def test_quiet_opens_no_stream(url, tmp_path, capsys):
    """--quiet used to open /dev/null and never close it (a ResourceWarning per run)."""
    import gc
    import warnings

    from easel.cli import main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert main(["generate", "--url", url, "--prompt", "x", "--steps", "1", "--quiet",
                     "--out", str(tmp_path / "q.png")]) == 0
        gc.collect()
    assert not [w for w in caught if "unclosed file" in str(w.message)]
    assert "generating" not in capsys.readouterr().err


def test_models_takes_a_token(tmp_path):
    with running_server(["easel-demo"], "--token", "s3cret",
                        "--no-preload", "--output-dir", str(tmp_path)) as u:
        r = easel("models", "--url", u, "--token", "s3cret")
        assert r.returncode == 0 and "easel-demo (default)" in r.stdout, r.stderr
        r = easel("models", "--url", u)
        assert r.returncode == 1 and "token" in r.stderr


def test_cli_flags_come_from_the_declarations():
    from easel.cli import build_parser
    from easel.cli.generate import request_from_args

    parser = build_parser()
    helptext = parser._subparsers._group_actions[0].choices["generate"].format_help()
    for d in request_fields().values():
        if d.flag:
            assert d.flag in helptext, d.name
    old_flags = ["--prompt", "a", "--negative", "b", "--model", "m", "--strength", "0.4", "--upscale", "2",
                 "--lora", "ink:0.5", "--lora", "soft", "--control-model", "c", "--control-strength", "0.7",
                 "--variation-seed", "9", "--variation-strength", "0.3", "--refiner", "--refiner-switch", "0.6",
                 "--steps", "3", "--guidance", "4.5", "--seed", "-1", "--batch", "2", "--width", "64",
                 "--height", "72", "--scheduler", "ddim", "--grow", "3", "--feather", "5", "--padding", "0.5"]
    args = parser.parse_args(["generate", "--out", "o.png", *old_flags])
    got = request_from_args(args, None, None)
    want = GenerateRequest(job=got.job, prompt="a", negative_prompt="b", model="m", strength=0.4, upscale=2,
                           loras=[{"name": "ink", "weight": 0.5}, {"name": "soft", "weight": 1.0}],
                           control_model="c", control_strength=0.7, variation_seed=9, variation_strength=0.3,
                           refiner=True, refiner_switch=0.6, steps=3, guidance=4.5, seed=-1, batch=2, width=64,
                           height=72, scheduler="ddim", grow=3, feather=5, padding=0.5, preview=False)
    assert got == want
    plain = request_from_args(parser.parse_args(["generate", "--out", "o.png", "--prompt", "x"]), None, None)
    assert plain == GenerateRequest(job=plain.job, prompt="x", preview=False)  # the protocol's defaults
