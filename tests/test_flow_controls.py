"""Control layers on FLUX.1 and SD 3/3.5, on tiny real ControlNets: two FLUX.1 ControlNets at once in every
mode, a FLUX.1 union with its ``control_mode`` (alone and beside a single-kind one) and an SD 3 ControlNet, each
equal to raw diffusers called directly with the same inputs; SD 3's missing image-to-image ControlNet pipeline
as a clear error; the kinds per model in the welcome; the family of a ControlNet folder from its config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.connection import Client, JobFailed, new_job_id
from easel.client.protocol import Control, GenerateRequest
from easel.client.protocol import Image as WireImage
from easel.server.engine import Engine, EngineError
from easel.server.families import Family
from helpers.engine_checks import assert_close, raw_call
from helpers.engine_jobs import SIZE, job
from helpers.server_harness import inprocess_server
from helpers.tiny_flow_models import build_tiny_flux_controlnet, build_tiny_sd3_controlnet

torch.set_num_threads(1)  # 2 shared cores
CANNY, DEPTH, UNION = "flux-controlnet-canny-tiny", "flux-controlnet-depth-tiny", "flux-controlnet-union-tiny"
SD3_CANNY = "sd3-controlnet-canny-tiny"
PARTS = {"txt2img": "", "img2img": "Img2Img", "inpaint": "Inpaint"}


@pytest.fixture(scope="module")
def nets(tiny_flux_path, tiny_sd3_path, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("flow_controls")
    return {"canny": build_tiny_flux_controlnet(tiny_flux_path, root / CANNY, seed=1),
            "depth": build_tiny_flux_controlnet(tiny_flux_path, root / DEPTH, seed=2),
            "union": build_tiny_flux_controlnet(tiny_flux_path, root / UNION, seed=3, union=True),
            "sd3": build_tiny_sd3_controlnet(tiny_sd3_path, root / SD3_CANNY, seed=4)}


@pytest.fixture(scope="module")
def engine(tiny_flux_path, tiny_sd3_path, nets):
    with Engine([tiny_flux_path, tiny_sd3_path], device="cpu", dtype="float32",
                control_models=[nets[k] for k in ("canny", "depth", "union", "sd3")]) as eng:
        yield eng


def lines() -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE))
    img.paste((255, 255, 255), (10, 10, 30, 54))
    return img


def ramp() -> Image.Image:
    values = np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8), (SIZE, 1))
    return Image.fromarray(np.dstack([values] * 3), "RGB")


def flow_job(model: str, mode: str = "txt2img", controls: list[Control] | None = None, **kw):
    return job(mode, model=model, guidance=4.0, controls=controls, attached={"a": lines(), "b": ramp()}, **kw)


def run(engine: Engine, j) -> list[Image.Image]:
    return engine.run(j, lambda p: None, lambda: False)


def diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def flux_pipe(flux_path: str, mode: str, *controlnets):
    import diffusers

    base = diffusers.FluxPipeline.from_pretrained(flux_path, dtype=torch.float32)
    net = controlnets[0] if len(controlnets) == 1 else list(controlnets)
    pipe = getattr(diffusers, f"FluxControlNet{PARTS[mode]}Pipeline").from_pipe(base, controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux_net(path: str):
    import diffusers

    return diffusers.FluxControlNetModel.from_pretrained(path, dtype=torch.float32)


@pytest.mark.parametrize("mode", list(PARTS))
def test_two_flux_controlnets_equal_raw_multi_controlnet(engine, nets, tiny_flux_path, mode):
    j = flow_job(tiny_flux_path, mode, [Control("canny", "a"), Control("depth", "b", 0.8, 0.1, 0.9)])
    (guided,) = run(engine, j)
    pipe = flux_pipe(tiny_flux_path, mode, flux_net(nets["canny"]), flux_net(nets["depth"]))
    assert_close(guided, raw_call(pipe, j, 7, control_image=[lines(), ramp()], controlnet_conditioning_scale=[1.0, 0.8],
                                  control_guidance_start=[0.0, 0.1], control_guidance_end=[1.0, 0.9],
                                  control_mode=[None, None]))  # img2img and inpaint need the list
    assert diff(guided, run(engine, flow_job(tiny_flux_path, mode))[0]) > 5  # the layers steer
    assert [c["model"] for c in guided.info["easel"]["features"]["controls"]] == [CANNY, DEPTH]


def test_flux_union_runs_each_layer_with_its_mode(engine, nets, tiny_flux_path):
    union = flux_net(nets["union"])
    alone = flow_job(tiny_flux_path, controls=[Control("depth", "b", 0.9, model=UNION)])
    (depth,) = run(engine, alone)
    assert_close(depth, raw_call(flux_pipe(tiny_flux_path, "txt2img", union), alone, 7, control_image=ramp(),
                                 control_mode=2, controlnet_conditioning_scale=0.9))
    (tile,) = run(engine, flow_job(tiny_flux_path, controls=[Control("tile", "b", 0.9, model=UNION)]))
    assert diff(depth, tile) > 1  # the same guide in another mode (tile: 1) steers otherwise
    # beside a single-kind ControlNet: one Multi-ControlNet, the single one's mode None
    mixed = flow_job(tiny_flux_path, "img2img", [Control("canny", "a"), Control("pose", "b", model=UNION)])
    pipe = flux_pipe(tiny_flux_path, "img2img", flux_net(nets["canny"]), union)
    (first,) = run(engine, mixed)
    assert_close(first, raw_call(pipe, mixed, 7, control_image=[lines(), ramp()], control_mode=[None, 4],
                                 controlnet_conditioning_scale=[1.0, 1.0], control_guidance_start=[0.0, 0.0],
                                 control_guidance_end=[1.0, 1.0]))
    mixed.seeds = [7, 9]  # a union's mode beyond text to image fits one image per call: run one by one
    assert_close(run(engine, mixed)[0], first)


def test_sd3_controlnet_equals_raw_per_seed(engine, nets, tiny_sd3_path):
    import diffusers

    j = flow_job(tiny_sd3_path, controls=[Control("canny", "a", 0.7)], seeds=[3, 11])
    images = run(engine, j)
    net = diffusers.SD3ControlNetModel.from_pretrained(nets["sd3"], dtype=torch.float32)
    base = diffusers.StableDiffusion3Pipeline.from_pretrained(tiny_sd3_path, dtype=torch.float32)
    pipe = diffusers.StableDiffusion3ControlNetPipeline.from_pipe(base, controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    for img, seed in zip(images, j.seeds):
        torch.manual_seed(seed)  # diffusers samples the control image's latents from torch's global generator
        assert_close(img, raw_call(pipe, j, seed, control_image=lines(), controlnet_conditioning_scale=0.7))
    assert diff(images[0], run(engine, flow_job(tiny_sd3_path, seeds=[3]))[0]) > 5
    assert diff(images[1], run(engine, flow_job(tiny_sd3_path, controls=j.controls, seeds=[11]))[0]) <= 1


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_sd3_controls_beyond_text_to_image_are_a_clear_error(engine, tiny_sd3_path, mode):
    with pytest.raises(EngineError) as err:
        run(engine, flow_job(tiny_sd3_path, mode, [Control("canny", "a")]))
    assert (err.value.field, err.value.code) == ("controls", "unsupported_feature")
    assert "text to image only" in str(err.value) and "leave controls unset" in str(err.value)
    assert Family.SD3.control_modes == ("txt2img",) and Family.FLUX.control_modes == Family.SD1.control_modes


def test_controlnets_of_another_family_or_kind(engine, tiny_flux_path):
    with pytest.raises(EngineError) as err:  # an SD 3 ControlNet named for a FLUX.1 model
        run(engine, flow_job(tiny_flux_path, controls=[Control("canny", "a", model=SD3_CANNY)]))
    assert err.value.code == "control_model_mismatch" and "FLUX.1" in str(err.value)
    with pytest.raises(EngineError) as err:  # a kind no FLUX.1 ControlNet here serves: what to download
        run(engine, flow_job(tiny_flux_path, controls=[Control("softedge", "a")]))
    assert (err.value.field, err.value.code) == ("controls[0].kind", "no_control_model")
    assert "FLUX.1" in str(err.value)


def test_welcome_lists_the_kinds_per_model_and_refuses_sd3_img2img(engine, tiny_sd3_path):
    with inprocess_server(engine) as (url, _):
        with Client(url, image_format="rgba") as client:
            models = {m["family"]: m for m in client.welcome["models"]}
            assert models["flux"]["controls"] == ["scribble", "lineart", "canny", "depth", "pose", "tile"]
            assert models["sd3"]["controls"] == ["canny"]
            assert "control_model" not in models["flux"]["features"]  # the legacy sketch guide stays SD's
            sent = {name: WireImage.rgba(SIZE, SIZE, img.convert("RGBA").tobytes())
                    for name, img in (("image", ramp()), ("a", lines()))}
            request = GenerateRequest(job=new_job_id(), prompt="x", model=models["sd3"]["id"], steps=2, strength=0.5,
                                      controls=[Control("canny", "a")])
            with pytest.raises(JobFailed) as err:
                client.generate(request, image=sent.pop("image"), attachments=sent)
    assert err.value.field == "controls" and "text to image only" in str(err.value)


def test_library_reads_flow_controlnets(nets, tmp_path):
    import shutil

    from easel.server.library.controls import folder_info, name_info
    from easel.server.library.scan import Library

    union, canny = folder_info(UNION, nets["union"]), folder_info(SD3_CANNY, nets["sd3"])
    assert (union.family, union.union, union.kinds) == (Family.FLUX, True, {"canny", "lineart", "scribble", "tile",
                                                                             "depth", "pose"})
    assert (union.mode("pose"), union.mode(None)) == (4, 0)  # the sketch guide takes canny's mode
    assert (canny.family, canny.union, canny.kinds) == (Family.SD3, False, {"canny"})
    for name in (UNION, SD3_CANNY):
        shutil.copytree(nets["union" if name == UNION else "sd3"], tmp_path / "ControlNet" / name)
    entries = {e.id: e for e in Library([str(tmp_path)]).entries("controlnet")}
    assert {i: (e.desc.family, e.problem) for i, e in entries.items()} == {f"ControlNet/{UNION}": (Family.FLUX, None),
                                                         f"ControlNet/{SD3_CANNY}": (Family.SD3, None)}
    hub = name_info("InstantX/FLUX.1-dev-Controlnet-Union")
    assert hub.family == Family.FLUX and hub.union and hub.mode("tile") == 1
    blur = name_info("stabilityai/stable-diffusion-3.5-large-controlnet-blur")
    assert (blur.family, blur.union, blur.kinds) == (Family.SD3, False, {"tile"})
