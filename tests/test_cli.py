"""The `easel` command end to end: a real `easel serve` subprocess and real client commands."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image as PILImage

from server_harness import REPO, running_server


def easel(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "easel", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def url(tiny_sd_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("served-results")
    with running_server([str(tiny_sd_path)], "--output-dir", str(out)) as u:
        yield u


def test_generate_writes_png_with_progress(url, tmp_path):
    out = tmp_path / "circle.png"
    r = easel("generate", "--url", url, "--prompt", "a red circle", "--seed", "7", "--steps", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "seed 7" in r.stdout
    assert "denoise" in r.stderr  # progress is shown
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
