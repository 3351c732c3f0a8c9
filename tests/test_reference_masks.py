"""Reference layers limited to part of the picture (a ``Control``'s ``mask``, diffusers' ``ip_adapter_masks``)
on tiny random IP-Adapters: a masked reference equals raw diffusers with the same mask, steers inside its mask
more than outside, two references (one masked) on SDXL equal raw diffusers, the mask reaches the adapters
under regional prompts too, and the errors (a mask on a guide, a mask of the wrong size, on FLUX.1) name the
field; ``easel generate --reference IMAGE#mask=MASK`` through a real server."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.connection import Client, JobFailed, new_job_id
from easel.client.protocol import Control, GenerateRequest, ProtocolError, Region, parse_reference
from easel.client.protocol import Image as WireImage
from easel.server.engine import Engine, EngineError, EngineJob
from helpers.engine_checks import assert_close, gradient
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)  # 2 shared cores
SIZE = 64
PROMPT = "a red cat"


def left_half() -> Image.Image:
    mask = Image.new("RGB", (SIZE, SIZE))
    mask.paste((255, 255, 255), (0, 0, SIZE // 2, SIZE))
    return mask


def top_half() -> Image.Image:
    return left_half().transpose(Image.Transpose.TRANSPOSE)


PICTURES = {"a": gradient(40), "b": Image.new("RGB", (48, 32), (20, 200, 40)), "m": left_half(), "r": top_half()}


def job(controls: list[Control] | None = None, model: str = "tiny-sd", **kw) -> EngineJob:
    return EngineJob(mode="txt2img", prompt=PROMPT, width=SIZE, height=SIZE, steps=3, guidance=7.5, model=model,
                     controls=controls, attached=dict(PICTURES), seeds=[7], **kw)


def run(ip_adapter_engine: Engine, j: EngineJob) -> Image.Image:
    return ip_adapter_engine.run(j, lambda p: None, lambda: False)[0]


def raw(folder: str, cls: str, tiny_ip_adapter_repo: str, sub: str, files: list[str], scales: list[float], masked: list[bool]):
    """The job from raw diffusers: the adapters from h94's layout, the left-half mask made by diffusers'
    IPAdapterMaskProcessor for the adapters marked ``masked``."""
    import diffusers
    from diffusers.image_processor import IPAdapterMaskProcessor

    pipe = getattr(diffusers, cls).from_pretrained(folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_ip_adapter(tiny_ip_adapter_repo, subfolder=sub, weight_name=files if len(files) > 1 else files[0])
    pipe.set_ip_adapter_scale(scales if len(scales) > 1 else scales[0])
    mask = IPAdapterMaskProcessor().preprocess([left_half()], height=SIZE, width=SIZE)
    images = [PICTURES[n] for n in ("a", "b")[:len(files)]]
    return pipe(prompt=PROMPT, num_inference_steps=3, guidance_scale=7.5, height=SIZE, width=SIZE,
                generator=torch.Generator("cpu").manual_seed(7), ip_adapter_image=images,
                cross_attention_kwargs={"ip_adapter_masks": [mask if m else None for m in masked]}).images[0]


def moved(a: Image.Image, b: Image.Image, columns: slice) -> float:
    """Mean change between two pictures over the given columns."""
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))[:, columns].mean())


def test_a_masked_reference_equals_raw_diffusers_and_steers_inside_its_mask(ip_adapter_engine, tiny_sd_path, tiny_ip_adapter_repo):
    plain = run(ip_adapter_engine, job())
    whole = run(ip_adapter_engine, job([Control("reference", "a", 1.0)]))
    masked = run(ip_adapter_engine, job([Control("reference", "a", 1.0, mask="m")]))
    assert_close(masked, raw(tiny_sd_path, "StableDiffusionPipeline", tiny_ip_adapter_repo, "models",
                             ["ip-adapter_sd15.safetensors"], [1.0], [True]))
    left, right = slice(0, SIZE // 2), slice(SIZE // 2, SIZE)
    # it acts where the mask is white (the tiny UNet's convolutions and self-attention carry some of it over)
    assert moved(masked, plain, left) > 1.2 * moved(masked, plain, right)
    assert moved(masked, plain, right) < moved(whole, plain, right)
    assert np.array_equal(np.asarray(run(ip_adapter_engine, job())), np.asarray(plain))  # later jobs untouched


def test_two_references_one_masked_on_sdxl_equal_raw_diffusers(ip_adapter_engine, tiny_sdxl_path, tiny_ip_adapter_repo):
    controls = [Control("reference", "a", 0.9, mask="m"), Control("face", "b", 0.6)]
    assert_close(run(ip_adapter_engine, job(controls, model="tiny-sdxl")),
                 raw(tiny_sdxl_path, "StableDiffusionXLPipeline", tiny_ip_adapter_repo, "sdxl_models",
                     ["ip-adapter_sdxl_vit-h.safetensors", "ip-adapter-plus-face_sdxl_vit-h.safetensors"], [0.9, 0.6],
                     [True, False]))


def test_the_mask_reaches_the_adapters_under_regional_prompts(ip_adapter_engine):
    """Regions wrap the cross-attention processors; the reference's mask still gets through them."""
    regions = [Region("r", "a blue dog")]
    plain = run(ip_adapter_engine, job(regions=regions))
    whole = run(ip_adapter_engine, job([Control("reference", "a", 1.0)], regions=regions))
    masked = run(ip_adapter_engine, job([Control("reference", "a", 1.0, mask="m")], regions=regions))
    right = slice(SIZE // 2, SIZE)
    assert moved(masked, plain, right) < moved(whole, plain, right)


def test_mask_errors_name_the_field(ip_adapter_engine, tiny_flux_path, tmp_path):
    message = GenerateRequest(job="j", prompt="x", controls=[Control("lineart", "l")]).to_message()
    message["controls"][0]["mask"] = "m"
    with pytest.raises(ProtocolError) as err:
        GenerateRequest.from_message(message)
    assert err.value.field == "controls[0].mask" and "leave 'mask' out" in str(err.value)
    with inprocess_server(ip_adapter_engine) as (url, _), Client(url, image_format="rgba") as client:
        request = GenerateRequest(job=new_job_id(), prompt=PROMPT, steps=3, width=SIZE, height=SIZE,
                                  controls=[Control("reference", "a", mask="m")])
        small = WireImage.rgba(32, 32, bytes(32 * 32 * 4))
        with pytest.raises(JobFailed) as err:
            client.generate(request, image=WireImage.rgba(SIZE, SIZE, bytes(SIZE * SIZE * 4)),
                            attachments={"a": rgba(PICTURES["a"]), "m": small})
        assert err.value.field == "m" and "at the size of the image" in str(err.value)
    from helpers.tiny_redux import build_tiny_redux

    redux = build_tiny_redux(tmp_path / "redux")
    with Engine([tiny_flux_path], device="cpu", dtype="float32", ip_adapters=[redux]) as flux:
        with pytest.raises(EngineError) as err:
            flux.check_controls(None, [Control("reference", "a", mask="m")])
    assert err.value.field == "controls[0].mask" and "IP-Adapter" in str(err.value)


def rgba(img: Image.Image) -> WireImage:
    return WireImage.rgba(img.width, img.height, img.convert("RGBA").tobytes())


def test_reference_flag_with_a_mask_through_a_real_server(ip_adapter_engine, tmp_path):
    from easel.cli import main

    assert parse_reference("style=a.png@0.6#mask=left.png") == {"kind": "style", "image": "a.png", "strength": 0.6,
                                                                 "mask": "left.png"}
    with pytest.raises(ProtocolError, match="name the mask file"):
        parse_reference("a.png#mask=")
    PICTURES["a"].save(tmp_path / "a.png")
    left_half().save(tmp_path / "m.png")
    expected = run(ip_adapter_engine, job([Control("reference", "a", 0.8, mask="m")]))
    with inprocess_server(ip_adapter_engine) as (url, _):
        out = tmp_path / "out.png"
        code = main(["generate", "--url", url, "--prompt", PROMPT, "--steps", "3", "--seed", "7", "--guidance", "7.5",
                     "--width", str(SIZE), "--height", str(SIZE), "--exact-size", "--quiet", "--reference",
                     f"{tmp_path / 'a.png'}@0.8#mask={tmp_path / 'm.png'}", "--out", str(out)])
        assert code == 0
    assert_close(Image.open(out).convert("RGB"), expected)
