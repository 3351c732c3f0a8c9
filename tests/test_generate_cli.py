"""`easel generate` as a user runs it, against real servers on 127.0.0.1 with the tiny model: a signal
cancels the job on the server, ``--out`` is checked before anything is sent and written in the format
its suffix names, ``--layer`` PNGs carry a real ``oFFs`` chunk, progress without a terminal reads as
sentences; and ``easel models --local`` names the built-in demo model."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import ExifTags
from PIL import Image as PILImage

from easel.cli import build_parser
from easel.client.connection import Client, JobCancelled, new_job_id
from easel.client.protocol import GenerateRequest
from helpers.cli_runs import canvas_and_mask, easel, keep_env
from helpers.probes import wait_until
from helpers.server_harness import REPO, inprocess_server

JOB_S = 300.0  # how long a job on the slow server takes: far above every deadline below
DEAD_URL = "ws://127.0.0.1:9"  # nothing listens: a command that connects fails with "cannot reach"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("easel generate:")]


# ----------------------------------------------------------------------------- a signal cancels the job
@pytest.fixture(scope="module")
def slow_server(tiny_sd_path):
    """The real App around the tiny model, every job slowed by ``JOB_S`` (tests/helpers/slow_engine.py)."""
    from easel.server.engine import Engine
    from helpers.slow_engine import SlowEngine

    engine = SlowEngine(Engine([str(tiny_sd_path)], device="cpu", dtype="float32"), delay=JOB_S)
    with inprocess_server(engine) as (u, app):
        yield u, app


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_cancels_the_job_and_frees_the_server(slow_server, tmp_path, sig, code):
    served, app = slow_server
    out = tmp_path / "o.png"
    proc = subprocess.Popen([sys.executable, "-m", "easel", "generate", "--url", served, "--prompt", "x", "--steps", "2",
                             "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert wait_until(lambda: app.running is not None or proc.poll() is not None, 60), "no job started"
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert error_lines(stderr) == [f"easel generate: cancelled ({sig.name}); the server stopped the job"], stderr
    assert stdout == "" and not out.exists()
    assert wait_until(lambda: app.running is None, 5), "the server still runs the abandoned job"
    with Client(served) as client:  # the next job starts at once
        job = client.submit(GenerateRequest(job=new_job_id(), prompt="y", steps=1, preview=False))
        assert wait_until(lambda: getattr(app.running, "id", None) == job, 10), "the next job did not start"
        client.cancel(job)
        with pytest.raises(JobCancelled):
            client.wait_for(job)


# ----------------------------------------------------------------------------- --out
@pytest.mark.parametrize("out, words", [
    ("/proc/x.png", ["--out /proc/x.png", "cannot create files in /proc", "choose a --out path"]),
    ("{tmp}/somefile.png/x.png", ["somefile.png is a file, not a folder", "choose another --out path"]),
    ("{tmp}/somefile.png/deeper/x.png", ["somefile.png is a file, not a folder"]),
    ("{tmp}", ["is a folder; give a file name"]),
    ("{tmp}/picture.gif", ["cannot write .gif files", ".png, .jpg, .jpeg, .webp"]),
])
def test_out_that_cannot_be_written_is_refused_before_connecting(tmp_path, out, words):
    (tmp_path / "somefile.png").write_bytes(b"not a folder")
    out = out.format(tmp=tmp_path)
    r = easel("generate", "--url", DEAD_URL, "--prompt", "x", "--out", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    [line] = error_lines(r.stderr)
    assert all(w in line for w in words), line
    assert (tmp_path / "somefile.png").read_bytes() == b"not a folder"


def test_layer_needs_a_png(tmp_path):
    r = easel("generate", "--url", DEAD_URL, "--prompt", "x", "--layer", "--out", str(tmp_path / "l.jpg"))
    assert r.returncode == 2 and error_lines(r.stderr) == [
        "easel generate: --layer writes a PNG (transparency and the oFFs offset chunk); give --out a .png name "
        "instead of l.jpg"], r.stderr


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk; asserts the signature and each CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        body, (crc,) = data[at + 8:at + 8 + length], struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        at += 12 + length
    return chunks


def test_layer_png_carries_a_valid_offs_chunk(url, tmp_path):  # noqa: F811 - the fixture
    r = easel("generate", "--url", url, "--prompt", "a blue square", "--seed", "3", "--steps", "2", "--quiet",
              *canvas_and_mask(tmp_path), "--layer", "--out", str(tmp_path / "patch.png"))
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "patch.png").read_bytes()
    kinds = [k for k, _ in png_chunks(data)]
    assert kinds[0] == b"IHDR" and kinds.count(b"oFFs") == 1 and kinds.index(b"oFFs") < kinds.index(b"IDAT")
    [offs] = [body for k, body in png_chunks(data) if k == b"oFFs"]
    patch = PILImage.open(tmp_path / "patch.png")
    assert struct.unpack(">iiB", offs) == (int(patch.text["easel.x"]), int(patch.text["easel.y"]), 0)
    assert int(patch.text["easel.x"]) > 0 and int(patch.text["easel.y"]) > 0  # a real offset, not 0,0
    assert patch.size != (96, 64) and patch.mode == "RGBA"


def test_offs_is_signed_pixels():
    from easel.cli.pictures import with_png_offset

    buf = io.BytesIO()
    PILImage.new("RGBA", (3, 2)).save(buf, "PNG")
    data = with_png_offset(buf.getvalue(), -5, 7)
    assert dict(png_chunks(data))[b"oFFs"] == b"\xff\xff\xff\xfb\x00\x00\x00\x07\x00"
    assert PILImage.open(io.BytesIO(data)).size == (3, 2)


def user_comment(path) -> str:
    """The EXIF UserComment (``UNICODE`` + UTF-16 BE, as A1111 writes and reads it)."""
    raw = PILImage.open(path).getexif().get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment]
    assert raw.startswith(b"UNICODE\0")
    return raw[8:].decode("utf-16-be")


def test_out_suffix_names_the_format(url, tmp_path):  # noqa: F811 - the fixture
    r = easel("generate", "--url", url, "--prompt", "x", "--seed", "7", "--steps", "2", "--batch", "2", "--quiet",
              "--out", str(tmp_path / "o.jpg"))
    assert r.returncode == 0, r.stderr
    for i, seed in ((1, 7), (2, 8)):
        path = tmp_path / f"o-{i}.jpg"
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"
        img = PILImage.open(path)
        assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "RGB"
        text = user_comment(path)
        assert text.startswith("x\n") and f"Seed: {seed}," in text and "Steps: 2" in text, text
    r = easel("generate", "--url", url, "--prompt", "x", "--seed", "7", "--steps", "2", "--quiet",
              *canvas_and_mask(tmp_path), "--out", str(tmp_path / "o.WEBP"))
    assert r.returncode == 0, r.stderr
    img = PILImage.open(tmp_path / "o.WEBP")
    assert img.format == "WEBP" and img.size == (96, 64) and "Seed: 7" in user_comment(tmp_path / "o.WEBP")


# ----------------------------------------------------------------------------- progress, help, models --local
def test_progress_without_a_terminal_reads_as_sentences(url, tmp_path):  # noqa: F811 - the fixture
    r = easel("generate", "--url", url, "--prompt", "x", "--steps", "4", "--out", str(tmp_path / "o.png"))
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("generating:")]
    assert lines[0] == "generating: queued at position 1", r.stderr
    assert lines[-1] == "generating: denoising 4/4", r.stderr
    assert len(lines) == len(set(lines)) <= 8, r.stderr  # a line per stage and per quarter, none twice
    assert not [line for line in lines if "0/0" in line or "queued:" in line or "denoise:" in line], r.stderr


@pytest.mark.parametrize("command", ["generate", "models"])
def test_url_has_help(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    [url_flag] = [a for a in sub._actions if "--url" in a.option_strings]
    assert url_flag.help and "ws://127.0.0.1:8765" in url_flag.help and "easel serve" in url_flag.help
    assert "ws://HOST:PORT" in sub.format_help()


def test_models_local_names_the_builtin_demo_model_once_nothing_else_is_there(tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "easel", "models", "--local", "--models-dir", str(tmp_path / "empty")],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin",
                            **keep_env("PYTHONPATH")})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert r.stdout.count("nothing found") == 1, r.stdout
    assert lines[-1] == "nothing found in the models folders or the Hugging Face cache; built in: easel-demo"
    [row] = [line for line in lines if line.split()[1:2] == ["easel-demo"]]
    assert row.split()[0] == "checkpoint" and "built-in demo" in row and "64px" in row, r.stdout
    assert "easel serve --model easel-demo" in r.stdout
