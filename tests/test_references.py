"""Reference layers (IP-Adapter: ``controls`` of kind reference, style, composition, face) on tiny random
IP-Adapters and a tiny CLIP image encoder in h94/IP-Adapter's layout: one and two references equal raw diffusers
(``load_ip_adapter`` + ``set_ip_adapter_scale`` + ``ip_adapter_image``), InstantStyle's scales land on their
blocks, a job without references after one with is bit-exact, errors name the kind, the download and the
family, and ``easel generate --reference`` runs against a real server."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.connection import Client, new_job_id
from easel.client.protocol import Control, GenerateRequest, ProtocolError, parse_reference
from easel.client.protocol import Image as WireImage
from easel.server.engine import Engine, EngineError, EngineJob
from easel.server.engine.references import scale_for
from helpers.engine_checks import assert_close, gradient
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)  # 2 shared cores
SIZE = 64


def picture(colour: tuple[int, int, int] = (200, 30, 30), size: int = 40) -> Image.Image:
    img = gradient(size)
    img.paste(colour, (5, 5, 25, 30))
    return img


def job(controls: list[Control] | None = None, model: str = "tiny-sd", **kw) -> EngineJob:
    kw.setdefault("seeds", [7])
    return EngineJob(mode="txt2img", prompt="a red cat", width=SIZE, height=SIZE, steps=3, guidance=7.5, model=model,
                     controls=controls, attached={"a": picture(), "b": picture((20, 200, 40), 48)}, **kw)


def run(ip_adapter_engine: Engine, j: EngineJob) -> Image.Image:
    return ip_adapter_engine.run(j, lambda p: None, lambda: False)[0]


def raw(folder: str, cls: str, tiny_ip_adapter_repo: str, sub: str, files: list[str], scales: list, images: list) -> Image.Image:
    """The job's picture from raw diffusers with the adapters loaded from h94's layout."""
    import diffusers

    pipe = getattr(diffusers, cls).from_pretrained(folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_ip_adapter(tiny_ip_adapter_repo, subfolder=sub, weight_name=files if len(files) > 1 else files[0])
    pipe.set_ip_adapter_scale(scales if len(scales) > 1 else scales[0])
    return pipe(prompt="a red cat", num_inference_steps=3, guidance_scale=7.5, height=SIZE, width=SIZE,
                generator=torch.Generator("cpu").manual_seed(7), ip_adapter_image=images).images[0]


def diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def test_one_reference_equals_raw_diffusers_and_later_jobs_are_bit_exact(ip_adapter_engine, tiny_sd_path, tiny_ip_adapter_repo):
    plain = run(ip_adapter_engine, job())
    guided = run(ip_adapter_engine, job([Control("reference", "a", 0.8)]))
    assert_close(guided, raw(tiny_sd_path, "StableDiffusionPipeline", tiny_ip_adapter_repo, "models", ["ip-adapter_sd15.safetensors"],
                             [0.8], [picture()]))
    assert diff(guided, plain) > 5  # the reference steers
    batch = ip_adapter_engine.run(job([Control("reference", "a", 0.8)], seeds=[8, 7]), lambda p: None, lambda: False)
    assert_close(batch[1], guided)  # each image of a batch as its own run
    assert np.array_equal(np.asarray(run(ip_adapter_engine, job())), np.asarray(plain))  # adapters taken out again
    assert guided.info["easel"]["features"]["controls"] == [{"kind": "reference", "strength": 0.8, "start": 0.0,
                                                             "end": 1.0}]
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as fresh:
        assert np.array_equal(np.asarray(run(fresh, job())), np.asarray(plain))


def test_two_references_on_sdxl_equal_raw_diffusers(ip_adapter_engine, tiny_sdxl_path, tiny_ip_adapter_repo):
    import diffusers

    controls = [Control("style", "a", 0.9), Control("face", "b", 0.6)]
    guided = run(ip_adapter_engine, job(controls, model="tiny-sdxl"))
    unet = diffusers.UNet2DConditionModel.from_pretrained(tiny_sdxl_path, subfolder="unet")
    scales = [scale_for("style", 0.9, unet), 0.6]
    expected = raw(tiny_sdxl_path, "StableDiffusionXLPipeline", tiny_ip_adapter_repo, "sdxl_models",
                   ["ip-adapter_sdxl_vit-h.safetensors", "ip-adapter-plus-face_sdxl_vit-h.safetensors"], scales,
                   [picture(), picture((20, 200, 40), 48)])
    assert_close(guided, expected)


def test_a_reference_with_a_control_layer_equals_raw_diffusers(tiny_sd_path, tiny_ip_adapter_repo, tmp_path):
    import diffusers

    from helpers.tiny_models import build_tiny_controlnet

    net = build_tiny_controlnet(tiny_sd_path, tmp_path / "control_v11p_sd15_lineart", seed=1)
    lines = Image.new("RGB", (SIZE, SIZE))
    lines.paste((255, 255, 255), (10, 10, 30, 54))
    controls = [Control("lineart", "l"), Control("reference", "a", 0.8)]
    with Engine([tiny_sd_path], device="cpu", dtype="float32", ip_adapters=[tiny_ip_adapter_repo], control_models=[net]) as eng:
        plain = run(eng, job())
        j = job(controls)
        j.attached["l"] = lines
        guided = run(eng, j)
        assert np.array_equal(np.asarray(run(eng, job())), np.asarray(plain))  # the shared UNet restored
    controlnet = diffusers.ControlNetModel.from_pretrained(net, dtype=torch.float32)
    pipe = diffusers.StableDiffusionControlNetPipeline.from_pretrained(tiny_sd_path, controlnet=controlnet,
                                                                       dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_ip_adapter(tiny_ip_adapter_repo, subfolder="models", weight_name="ip-adapter_sd15.safetensors")
    pipe.set_ip_adapter_scale(0.8)
    expected = pipe(prompt="a red cat", num_inference_steps=3, guidance_scale=7.5, height=SIZE, width=SIZE,
                    image=lines, controlnet_conditioning_scale=1.0, ip_adapter_image=[picture()],
                    generator=torch.Generator("cpu").manual_seed(7)).images[0]
    assert_close(guided, expected)


def test_out_of_memory_retry_keeps_the_references(tiny_sd_path, tiny_ip_adapter_repo):
    """The retry with attention slicing still steers with the references; slicing stays on for the model."""
    with Engine([tiny_sd_path], device="cpu", dtype="float32", ip_adapters=[tiny_ip_adapter_repo]) as eng:
        plain = run(eng, job())
        guided = run(eng, job([Control("reference", "a", 0.8)]))
        calls = {"n": 0}

        def oom_once(module, args, output):
            calls["n"] += 1
            if calls["n"] == 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return output

        unet = eng.pipeline(None).unet
        handle = unet.register_forward_hook(oom_once)
        try:
            retried = run(eng, job([Control("reference", "a", 0.8)]))
        finally:
            handle.remove()
        assert calls["n"] > 1 and diff(retried, plain) > 5
        assert_close(retried, guided)
        kinds = {type(p).__name__ for p in unet.attn_processors.values()}
        assert kinds == {"SlicedAttnProcessor"} and unet.encoder_hid_proj is None
        assert_close(run(eng, job([Control("reference", "a", 0.8)])), guided)  # with slicing on: as before


def test_style_and_composition_scale_their_blocks_only(ip_adapter_engine):
    pipe = ip_adapter_engine.pipeline("tiny-sdxl")
    unet = pipe.unet
    from easel.server.engine.references import attach, detach

    layers = ip_adapter_engine._references.layers([Control("style", "a", 0.7), Control("composition", "b", 0.4)],
                                       {"a": picture(), "b": picture()}, ip_adapter_engine._catalog.traits("tiny-sdxl").family,
                                       80, "float32")
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    saved = attach(pipe, layers)
    try:
        scales = {name: list(p.scale) for name, p in unet.attn_processors.items() if hasattr(p, "scale")}
    finally:
        detach(pipe, saved)
    # the tiny SDXL UNet: down blocks (plain, 1 attention), up blocks (2 attentions, plain)
    style = "up_blocks.0.attentions.1."
    layout = "down_blocks.1.attentions.0."
    assert scales and all(s == [0.7 if n.startswith(style) else 0.0, 0.4 if n.startswith(layout) else 0.0]
                          for n, s in scales.items())
    assert any(n.startswith(style) for n in scales) and any(n.startswith(layout) for n in scales)
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before
    assert unet.encoder_hid_proj is None and getattr(pipe, "image_encoder", None) is None


def test_sd15_layout_scales():
    """SD 1.5's real block layout (3 attention down blocks, then one without; up: one without, then 3)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(block_out_channels=(32, 32, 32, 32), layers_per_block=2, cross_attention_dim=32,
                                    norm_num_groups=8)
    assert scale_for("style", 0.5, unet) == {"up": {"block_1": [0.0, 0.5, 0.0]}}
    assert scale_for("composition", 0.5, unet) == {"down": {"block_2": [0.0, 0.5]}}
    assert scale_for("reference", 0.5, unet) == 0.5


def test_welcome_kinds_and_errors(ip_adapter_engine, tiny_sd_path, tiny_sd3_path, tiny_ip_adapter_repo):
    kinds = {m.id: m.controls for m in ip_adapter_engine.models()}
    assert kinds["tiny-sd"] == kinds["tiny-sdxl"] == ["reference", "style", "composition", "face"]
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as bare:
        assert bare.models()[0].controls == []
        with pytest.raises(EngineError) as err:
            run(bare, job([Control("face", "a")]))
        assert err.value.field == "controls[0].kind"
        assert "h94/IP-Adapter models/ip-adapter-plus-face_sd15.safetensors" in str(err.value)
        assert "--ip-adapter h94/IP-Adapter" in str(err.value)
    with Engine([tiny_sd3_path], device="cpu", dtype="float32", ip_adapters=[tiny_ip_adapter_repo]) as sd3:
        with pytest.raises(EngineError) as err:
            sd3.check_controls(None, [Control("style", "a")])
        assert err.value.field == "controls[0].kind" and "SD 1.x/SDXL" in str(err.value)
    with pytest.raises(ProtocolError) as perr:
        GenerateRequest.from_message(GenerateRequest(job="j", prompt="x", controls=[
            {"kind": "style", "image": "a", "start": 0.2}]).to_message())
    assert perr.value.field == "controls[0].start"
    with pytest.raises(EngineError) as err:
        Engine([tiny_sd_path], device="cpu", dtype="float32", ip_adapters=["no-such/IP-Adapter-tiny_ip_adapter_repo"])
    assert "hf download no-such/IP-Adapter-tiny_ip_adapter_repo" in str(err.value)


def test_comfyui_folders_and_a_single_file_encoder(tiny_sd_path, tiny_ip_adapter_repo, tmp_path):
    """ipadapter/ and clip_vision/ of a models folder: the encoder a single file (transformers' keys, as
    ComfyUI's), its config from the shapes (one head per 64 wide, gelu); FaceID files are not offered."""
    import shutil

    from helpers.tiny_ip_adapter import build_tiny_image_encoder

    raw_repo = tmp_path / "raw"
    encoder = build_tiny_image_encoder(raw_repo / "models" / "image_encoder", seed=5, hidden_size=64,
                                       num_attention_heads=1, hidden_act="gelu")
    adapter = f"{tiny_ip_adapter_repo}/models/ip-adapter_sd15.safetensors"
    shutil.copy(adapter, raw_repo / "models")
    root = tmp_path / "ComfyUI" / "models"
    for folder, source, name in [("ipadapter", adapter, "ip-adapter_sd15.safetensors"),
                                 ("ipadapter", f"{tiny_ip_adapter_repo}/models/ip-adapter-plus-face_sd15.safetensors",
                                  "ip-adapter-faceid-plusv2_sd15.safetensors"),
                                 ("clip_vision", f"{encoder}/model.safetensors", "CLIP-ViT-tiny.safetensors")]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / folder / name)
    with Engine([tiny_sd_path], device="cpu", dtype="float32", models_dir=[str(root)]) as eng:
        assert eng.models()[0].controls == ["reference", "style", "composition"]
        guided = run(eng, job([Control("reference", "a", 0.8)]))
    assert_close(guided, raw(tiny_sd_path, "StableDiffusionPipeline", str(raw_repo), "models",
                             ["ip-adapter_sd15.safetensors"], [0.8], [picture()]))


def test_reference_flag_parses():
    assert parse_reference("cat.png") == {"kind": "reference", "image": "cat.png"}
    assert parse_reference("style=a@b.png@0.6") == {"kind": "style", "image": "a@b.png", "strength": 0.6}
    for text, words in [("lineart=a.png", "--control lineart=a.png"), ("x=a.png", "KIND one of"),
                        ("face=a.png@much", "number")]:
        with pytest.raises(ProtocolError, match=words):
            parse_reference(text)


def rgba(img: Image.Image) -> WireImage:
    return WireImage.rgba(img.width, img.height, img.convert("RGBA").tobytes())


def test_server_and_cli(ip_adapter_engine, tmp_path):
    from easel.cli import main

    picture().save(tmp_path / "a.png")
    expected = run(ip_adapter_engine, job([Control("reference", "a", 0.8)]))
    with inprocess_server(ip_adapter_engine) as (url, _):
        with Client(url, image_format="rgba") as client:
            models = {m["id"]: m for m in client.welcome["models"]}
            assert models["tiny-sd"]["controls"] == ["reference", "style", "composition", "face"]
            request = GenerateRequest(job=new_job_id(), prompt="a red cat", steps=3, seed=7, guidance=7.5,
                                      controls=[Control("reference", "a", 0.8)])
            result = client.generate(request, attachments={"a": rgba(picture())})  # not the job's size: as is
            served = Image.frombytes("RGBA", (SIZE, SIZE), result.images[0].image.data).convert("RGB")
            assert_close(served, expected)
        out = tmp_path / "out.png"
        code = main(["generate", "--url", url, "--prompt", "a red cat", "--steps", "3", "--seed", "7", "--guidance",
                     "7.5", "--quiet", "--reference", f"{tmp_path / 'a.png'}@0.8", "--out", str(out)])
        assert code == 0
        assert_close(Image.open(out).convert("RGB"), served)


def test_easel_serve_ip_adapter_and_generate_reference(ip_adapter_engine, tiny_sd_path, tiny_ip_adapter_repo, tmp_path):
    """A real ``easel serve --ip-adapter`` and ``easel generate --reference``."""
    from helpers.cli_runs import easel
    from helpers.server_harness import running_server

    picture().save(tmp_path / "a.png")
    expected = run(ip_adapter_engine, job([Control("style", "a", 0.8)]))
    with running_server([tiny_sd_path], "--ip-adapter", tiny_ip_adapter_repo) as url:
        out = tmp_path / "out.png"
        done = easel("generate", "--url", url, "--prompt", "a red cat", "--steps", "3", "--seed", "7", "--guidance",
                     "7.5", "--quiet", "--reference", f"style={tmp_path / 'a.png'}@0.8", "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert_close(Image.open(out).convert("RGB"), expected)


def test_bad_reference_flags_are_one_line_errors(tmp_path, capsys):
    from easel.cli import main

    picture().save(tmp_path / "a.png")
    assert main(["generate", "--prompt", "x", "--reference", f"depth={tmp_path / 'a.png'}", "--out",
                 str(tmp_path / "o.png")]) == 2
    assert main(["serve", "--port", "0", "--ip-adapter", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "use --control depth=" in err and "--ip-adapter" in err and "Traceback" not in err
