"""The demo model says why its big pictures are poor: a real server with the real demo engine on 127.0.0.1.

``hires: auto`` skips the toy's second pass and a tiled upscale refines 64² tiles; the painter is told
so in the progress messages (which `easel generate` prints) and in the result's ``parameters.notes``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest
from easel.client.protocol import Image as WireImage
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)
SKETCH = "enlarged sketch: the demo model paints at 64×64; the second pass that adds detail at 2048×2048 needs a real model"


@pytest.fixture(scope="module")
def url():
    from easel.server.demo import DEMO_ID
    from easel.server.engine import Engine

    with inprocess_server(Engine([DEMO_ID], device="cpu", dtype="float32")) as (u, _):
        yield u


def test_cli_says_a_2048_picture_is_an_enlarged_sketch(url, tmp_path, capsys):
    from easel.cli import main

    out = tmp_path / "big.png"
    assert main(["generate", "--url", url, "--prompt", "a harbour", "--width", "2048", "--height", "2048",
                 "--steps", "2", "--seed", "1", "--out", str(out)]) == 0
    assert PILImage.open(out).size == (2048, 2048)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]  # whole, after the job
    assert len(notes) == 1 and notes[0].startswith(f"note: {SKETCH}") and "at 2048×2048 needs" in notes[0]


def generate(url: str, image: WireImage | None = None, **kw) -> tuple[list[str], dict]:
    """(the messages of the job's denoise or upscale progress, the result's parameters)."""
    messages: list[str] = []
    with Client(url, image_format="rgba") as client:
        result = client.generate(GenerateRequest(job=new_job_id(), prompt="a red circle", steps=2, seed=3, **kw),
                                 image, on_progress=lambda p: messages.append(p.message)
                                 if p.stage in ("denoise", "upscale") else None)
    return messages, result.parameters


def test_every_first_pass_step_and_the_result_carry_the_note(url):
    messages, parameters = generate(url, width=512, height=384)
    note = parameters["notes"][0]
    assert note.startswith("enlarged sketch: the demo model paints at 72×56;") and "at 512×384 needs" in note
    assert messages and all(m == note for m in messages) and "second_pass" not in parameters


@pytest.mark.parametrize("kw", [{"hires": "on"}, {"hires": "off"}, {"exact_size": True}, {}],
                         ids=["hires-on", "hires-off", "exact-size", "native"])
def test_no_note_when_nothing_was_skipped(url, kw):
    size = {} if not kw else {"width": 160, "height": 160}  # {}: the native 64², no second pass to skip
    messages, parameters = generate(url, **kw, **size)
    assert "notes" not in parameters and not any("enlarged sketch" in m for m in messages)
    assert ("second_pass" in parameters) is (kw == {"hires": "on"})


def test_upscale_says_the_demo_refines_64_px_tiles(url):
    rgba = np.full((64, 64, 4), 255, np.uint8)
    rgba[16:48, 16:48, :3] = (200, 30, 30)
    messages, parameters = generate(url, WireImage.rgba(64, 64, rgba.tobytes()), upscale=2, strength=0.3)
    assert parameters["notes"] == ["little detail added: the demo model refines 64×64 tiles and knows only simple "
                                   "shapes; upscale with a real model (docs/demo-model.md)"]
    assert messages[0] == parameters["notes"][0] and any(m.startswith("tile 1/") for m in messages)
