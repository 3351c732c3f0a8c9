"""The ``inpaint`` and ``stencil`` control kinds on tiny real ControlNets, each equal to raw diffusers called the
way the models' cards call them: SD 1.5's inpaint ControlNet with diffusers' ``make_inpaint_condition`` guide (the
selection's pixels -1), xinsir's SDXL union in its repaint mode (the selection's pixels black), the layer's image as
is without a selection; a QR-monster-style stencil ControlNet found by its name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.protocol import Control
from easel.server.engine import Engine, EngineJob
from helpers.engine_checks import assert_close, raw_call
from helpers.engine_jobs import SIZE, job
from helpers.tiny_models import build_tiny_controlnet, build_tiny_controlnet_union

torch.set_num_threads(1)  # 2 shared cores
INPAINT, STENCIL, UNION = "control_v11p_sd15_inpaint", "control_v1p_sd15_qrcode_monster", "controlnet-union-sdxl-tiny"


@pytest.fixture(scope="module")
def nets(tiny_sd_path, tiny_sdxl_path, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("control_inpaint")
    return {"inpaint": build_tiny_controlnet(tiny_sd_path, root / INPAINT, seed=5),
            "stencil": build_tiny_controlnet(tiny_sd_path, root / STENCIL, seed=6),
            "union": build_tiny_controlnet_union(tiny_sdxl_path, root / UNION, seed=3)}


@pytest.fixture(scope="module")
def engine(tiny_sd_path, tiny_sdxl_path, nets):
    with Engine([tiny_sd_path, tiny_sdxl_path], device="cpu", dtype="float32",
                control_models=[nets["inpaint"], nets["stencil"], nets["union"]]) as eng:
        yield eng


def make_inpaint_condition(image: Image.Image, image_mask: Image.Image) -> torch.Tensor:
    """diffusers' documented guide for control_v11p_sd15_inpaint: [0, 1] floats, the masked pixels -1."""
    pixels = np.array(image.convert("RGB")).astype(np.float32) / 255.0
    mask = np.array(image_mask.convert("L")).astype(np.float32) / 255.0
    pixels[mask > 0.5] = -1.0
    return torch.from_numpy(np.expand_dims(pixels, 0).transpose(0, 3, 1, 2))


def repaint_image(image: Image.Image, mask: Image.Image) -> Image.Image:
    """diffusers' documented guide for xinsir's union (promax) in repaint mode: the masked pixels black."""
    pixels = np.array(image.convert("RGB"))
    pixels[np.array(mask.convert("L")) > 0] = 0
    return Image.fromarray(pixels)


def guided(mode: str, kind: str, **kw) -> EngineJob:
    j = job(mode, guidance=7.5, controls=[Control(kind, "layer")], **kw)
    j.attached = {"layer": stripes()}
    return j


def stripes() -> Image.Image:
    """A layer picture unlike the job's own: vertical bars."""
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    pixels[:, ::8] = (250, 200, 40)
    pixels[:, 1::8] = (250, 200, 40)
    return Image.fromarray(pixels)


def run(engine: Engine, j: EngineJob) -> Image.Image:
    return engine.run(j, lambda p: None, lambda: False)[0]


def diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def conditions(monkeypatch, cls) -> list[torch.Tensor]:
    """What ``cls``'s ControlNets are given as their condition from now on (one per call, its first row)."""
    seen: list[torch.Tensor] = []
    forward = cls.forward

    def spy(self, *args, **kwargs):
        cond = kwargs["controlnet_cond"]
        seen.append((cond[0] if isinstance(cond, list) else cond)[0].detach().clone())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", spy)
    return seen


def sd_pipe(sd_path: str, net_path: str, part: str):
    import diffusers

    net = diffusers.ControlNetModel.from_pretrained(net_path, dtype=torch.float32)
    pipe = getattr(diffusers, f"StableDiffusionControlNet{part}Pipeline").from_pretrained(
        sd_path, controlnet=net, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sd15_inpaint_layer_marks_the_selection_minus_one(engine, tiny_sd_path, nets, monkeypatch):
    import diffusers

    j = guided("inpaint", "inpaint")
    seen = conditions(monkeypatch, diffusers.ControlNetModel)
    out = run(engine, j)
    guide = make_inpaint_condition(stripes(), j.mask)[0]
    assert seen and all(torch.equal(cond, guide) for cond in seen)  # unchanged by the control-image processing
    selected = torch.from_numpy(np.array(j.mask) > 127)
    assert bool((seen[0][:, selected] == -1).all()) and float(seen[0][:, ~selected].min()) >= 0
    monkeypatch.undo()
    assert_close(out, raw_call(sd_pipe(tiny_sd_path, nets["inpaint"], "Inpaint"), j, 7, control_image=guide[None],
                               controlnet_conditioning_scale=1.0))  # the inpaint pipeline's default is 0.5
    assert diff(out, run(engine, job("inpaint", guidance=7.5))) > 5  # the layer steers


def test_without_a_selection_the_inpaint_layer_is_its_image(engine, tiny_sd_path, nets):
    j = guided("img2img", "inpaint")
    assert_close(run(engine, j), raw_call(sd_pipe(tiny_sd_path, nets["inpaint"], "Img2Img"), j, 7,
                                          control_image=stripes(), controlnet_conditioning_scale=1.0))


def test_sdxl_union_repaint_mode_blacks_out_the_selection(engine, tiny_sdxl_path, nets, monkeypatch):
    import diffusers

    j = guided("inpaint", "inpaint", model="tiny-sdxl")
    seen = conditions(monkeypatch, diffusers.ControlNetUnionModel)
    out = run(engine, j)
    guide = repaint_image(stripes(), j.mask)
    expected = torch.from_numpy(np.array(guide, np.float32).transpose(2, 0, 1) / 255.0)
    assert seen and all(torch.allclose(cond, expected) for cond in seen)
    assert float(seen[0][:, torch.from_numpy(np.array(j.mask) > 0)].abs().max()) == 0.0
    monkeypatch.undo()
    union = diffusers.ControlNetUnionModel.from_pretrained(nets["union"], dtype=torch.float32)
    pipe = diffusers.StableDiffusionXLControlNetUnionInpaintPipeline.from_pretrained(
        tiny_sdxl_path, controlnet=union, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert_close(out, raw_call(pipe, j, 7, control_image=[guide], control_mode=[7]))
    assert out.info["easel"]["features"]["controls"] == [{"kind": "inpaint", "strength": 1.0, "start": 0.0,
                                                          "end": 1.0, "model": UNION}]


def test_stencil_layer_finds_the_qr_monster_by_name_and_steers(engine, tiny_sd_path, nets):
    assert "stencil" in next(m.controls for m in engine.models() if m.id == "tiny-sd")
    j = guided("txt2img", "stencil")
    out = run(engine, j)
    assert out.info["easel"]["features"]["controls"][0]["model"] == STENCIL
    assert_close(out, raw_call(sd_pipe(tiny_sd_path, nets["stencil"], ""), j, 7, image=stripes()))
    assert diff(out, run(engine, job(guidance=7.5))) > 5
