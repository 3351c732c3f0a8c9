"""Reference layers on FLUX.1 through FLUX Redux (a tiny random ``FluxPriorReduxPipeline`` folder): one
reference equals raw diffusers (the prior pipeline with the prompt and the model's text encoders, then the
Flux pipeline on its embeddings, the strength as an attention bias on the picture's tokens) in each mode, as
a style layer (its tokens pooled) and with a FLUX.1 ControlNet, a higher strength steers further, two references are two blocks of tokens, a job
without references afterwards is bit-exact, errors name the kind and the download, the welcome and a models
folder's style_models/ (a diffusers folder, or ComfyUI's two single files with clip_vision/), and
``easel generate --reference`` against a real ``easel serve --ip-adapter``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.codes import ErrorCode
from easel.client.protocol import Control
from easel.server.engine import Engine, EngineError, EngineJob
from helpers.engine_checks import assert_close, gradient
from helpers.engine_jobs import PROMPT, SIZE, job
from helpers.tiny_redux import build_tiny_redux

torch.set_num_threads(1)  # 2 shared cores
REDUX_REPO = "black-forest-labs/FLUX.1-Redux-dev"


@pytest.fixture(scope="module")
def redux(tmp_path_factory) -> str:
    return build_tiny_redux(tmp_path_factory.mktemp("redux") / "FLUX.1-Redux-dev")


@pytest.fixture(scope="module")
def engine(tiny_flux_path, redux):
    with Engine([tiny_flux_path], device="cpu", dtype="float32", ip_adapters=[redux]) as eng:
        yield eng


def picture(colour: tuple[int, int, int] = (200, 30, 30), size: int = 40) -> Image.Image:
    img = gradient(size)
    img.paste(colour, (5, 5, 25, 30))
    return img


PICTURES = {"a": picture(), "b": Image.new("RGB", (48, 32), (20, 40, 220))}


def flux_job(mode: str = "txt2img", controls: list[Control] | None = None, **kw) -> EngineJob:
    j = job(mode, model="tiny-flux-dev", guidance=3.5, controls=controls, **kw)
    j.attached = dict(PICTURES)
    return j


def run(engine: Engine, j: EngineJob) -> list[Image.Image]:
    return engine.run(j, lambda p: None, lambda: False)


def style_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """A style layer's tokens: the tiny Redux's 8x8 patch grid (64 tokens) averaged to 8 // 3 = 2 a side."""
    grid = tokens.reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(grid, size=(2, 2), mode="area").permute(0, 2, 3, 1).reshape(1, 4, -1)


def raw(flux: str, redux: str, j: EngineJob, references: list[tuple[str, float]], seed: int = 7,
        kinds: tuple[str, ...] = (), **control: object) -> Image.Image:
    """``j`` from raw diffusers: FluxPriorReduxPipeline with the prompt and the Flux text encoders per picture,
    each picture's image tokens (after the prompt's 512) appended in order; strengths other than 1 as
    ``log(strength)`` added to the attention scores of their tokens (an ``attention_mask`` over the keys:
    prompt, pictures, then the 4x4 packed latent tokens of a 64 px image). ``control``: a text-to-image
    FluxControlNetPipeline's ``controlnet`` and call arguments; ``kinds``: "style" pools that picture's tokens."""
    import diffusers

    name = {"txt2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline"}[j.mode]
    net = control.pop("controlnet", None)
    pipe = (diffusers.FluxControlNetPipeline.from_pretrained(flux, controlnet=net, dtype=torch.float32) if net else
            getattr(diffusers, name).from_pretrained(flux, dtype=torch.float32))
    pipe.set_progress_bar_config(disable=True)
    prior = diffusers.FluxPriorReduxPipeline.from_pretrained(
        redux, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, text_encoder_2=pipe.text_encoder_2,
        tokenizer_2=pipe.tokenizer_2, dtype=torch.float32)
    outs = [prior(PICTURES[name], prompt=PROMPT) for name, _ in references]
    blocks = [style_tokens(out.prompt_embeds[:, 512:]) if kind == "style" else out.prompt_embeds[:, 512:]
              for out, kind in zip(outs, kinds or ("reference",) * len(outs))]
    embeds = torch.cat([outs[0].prompt_embeds[:, :512], *blocks], dim=1)
    bias = torch.zeros(embeds.shape[1] + (SIZE // 16) ** 2)
    start = 512
    for block, (_, strength) in zip(blocks, references):
        tokens = block.shape[1]
        bias[start:start + tokens] = math.log(strength)
        start += tokens
    extra = {"joint_attention_kwargs": {"attention_mask": bias[None, None, None]}} if bias.any() else {}
    kwargs = dict(**extra, **control, prompt_embeds=embeds, pooled_prompt_embeds=outs[0].pooled_prompt_embeds, num_inference_steps=3,
                  guidance_scale=3.5, height=SIZE, width=SIZE, generator=torch.Generator("cpu").manual_seed(seed))
    if j.mode != "txt2img":
        kwargs.update(image=j.image, strength=j.strength)
    if j.mode == "inpaint":
        kwargs["mask_image"] = j.mask
    return pipe(**kwargs).images[0]


def diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize(("mode", "strength"), [("txt2img", 1.0), ("img2img", 0.6), ("inpaint", 0.8)])
def test_one_reference_equals_raw_diffusers_and_later_jobs_are_bit_exact(engine, tiny_flux_path, redux, mode,
                                                                         strength):
    (plain,) = run(engine, flux_job(mode))
    (guided,) = run(engine, flux_job(mode, [Control("reference", "a", strength)]))
    assert_close(guided, raw(tiny_flux_path, redux, flux_job(mode), [("a", strength)]))
    assert diff(guided, plain) > 3  # the reference steers
    assert np.array_equal(np.asarray(run(engine, flux_job(mode))[0]), np.asarray(plain))
    assert guided.info["easel"]["features"]["controls"] == [{"kind": "reference", "strength": strength,
                                                             "start": 0.0, "end": 1.0}]
    if mode == "txt2img":  # each image of a batch as its own run; a higher strength steers further
        batch = run(engine, flux_job(mode, [Control("reference", "a", strength)], seeds=[8, 7]))
        assert_close(batch[1], guided) and diff(batch[0], guided) > 3
        away = [mean_diff(run(engine, flux_job(mode, [Control("reference", "a", s)]))[0], plain) for s in (0.3, 2.0)]
        assert away[0] < mean_diff(guided, plain) < away[1]
    with Engine([tiny_flux_path], device="cpu", dtype="float32") as fresh:  # never touched by Redux
        assert np.array_equal(np.asarray(run(fresh, flux_job(mode))[0]), np.asarray(plain))


def test_two_references_are_two_blocks_of_tokens(engine, tiny_flux_path, redux):
    refs = [("a", 0.9), ("b", 1.5)]
    (guided,) = run(engine, flux_job("txt2img", [Control("reference", n, s) for n, s in refs]))
    assert_close(guided, raw(tiny_flux_path, redux, flux_job("txt2img"), refs))
    (one,) = run(engine, flux_job("txt2img", [Control("reference", "a", 0.9)]))
    assert diff(guided, one) > 3  # the second picture steers too
    (off,) = run(engine, flux_job("txt2img", [Control("reference", "a", 0.9), Control("reference", "b", 0.0)]))
    assert np.array_equal(np.asarray(off), np.asarray(one))  # strength 0: left out


def test_a_style_layer_reads_the_pooled_tokens(engine, tiny_flux_path, redux):
    """``style``: the picture's Redux tokens averaged over 3x3 patches (fewer, coarser tokens) steer apart
    from ``reference``'s; beside a reference each is its own block; a job without them stays bit-exact."""
    (plain,) = run(engine, flux_job("img2img"))
    (styled,) = run(engine, flux_job("img2img", [Control("style", "a", 0.8)]))
    assert_close(styled, raw(tiny_flux_path, redux, flux_job("img2img"), [("a", 0.8)], kinds=("style",)))
    (whole,) = run(engine, flux_job("img2img", [Control("reference", "a", 0.8)]))
    assert not np.array_equal(np.asarray(styled), np.asarray(plain))  # it steers, less than the whole picture
    assert 0 < mean_diff(styled, plain) < mean_diff(whole, plain) and diff(styled, whole) > 3
    refs = [("b", 1.2), ("a", 0.8)]
    (both,) = run(engine, flux_job("txt2img", [Control("reference", "b", 1.2), Control("style", "a", 0.8)]))
    assert_close(both, raw(tiny_flux_path, redux, flux_job("txt2img"), refs, kinds=("reference", "style")))
    assert np.array_equal(np.asarray(run(engine, flux_job("img2img"))[0]), np.asarray(plain))
    assert styled.info["easel"]["features"]["controls"][0]["kind"] == "style"


def test_style_pooling_of_a_full_size_token_grid():
    """FLUX.1-Redux-dev's 27x27 patch tokens: each of the 9x9 style tokens is the mean of its 3x3 patches."""
    from easel.server.engine.redux import pooled

    tokens = torch.randn(1, 729, 5)
    out = pooled(tokens)
    assert out.shape == (1, 81, 5)
    grid = tokens.reshape(27, 27, 5)
    assert torch.allclose(out[0, 9 * 2 + 4], grid[6:9, 12:15].mean(dim=(0, 1)), atol=1e-6)  # row 2, column 4
    with pytest.raises(ValueError, match="not a square grid"):
        pooled(torch.zeros(1, 10, 5))


def test_a_reference_with_a_flux_controlnet_equals_raw_diffusers(tiny_flux_path, redux, tmp_path):
    """The attention bias reaches the ControlNet's attention too (its keys: the same prompt and latents)."""
    import diffusers

    from helpers.tiny_flow_models import build_tiny_flux_controlnet

    net = build_tiny_flux_controlnet(tiny_flux_path, tmp_path / "flux-controlnet-canny", seed=1)
    lines = Image.new("RGB", (SIZE, SIZE))
    lines.paste((255, 255, 255), (10, 10, 30, 54))
    with Engine([tiny_flux_path], device="cpu", dtype="float32", ip_adapters=[redux], control_models=[net]) as eng:
        j = flux_job(controls=[Control("canny", "l", 0.8), Control("reference", "a", 0.5)])
        j.attached["l"] = lines
        (guided,) = run(eng, j)
    controlnet = diffusers.FluxControlNetModel.from_pretrained(net, dtype=torch.float32)
    assert_close(guided, raw(tiny_flux_path, redux, j, [("a", 0.5)], controlnet=controlnet, control_image=lines,
                             controlnet_conditioning_scale=0.8))


def test_welcome_errors_and_a_models_folder(engine, tiny_flux_path, redux, tmp_path):
    import shutil

    assert engine.models()[0].controls == ["reference", "style"] and engine.models()[0].family == "flux"
    with pytest.raises(EngineError) as err:
        engine.check_controls(None, [Control("style", "a"), Control("composition", "b")])
    assert (err.value.field, err.value.code) == ("controls[1].kind", ErrorCode.UNSUPPORTED_FEATURE)
    assert "use kind reference or style" in str(err.value)
    with Engine([tiny_flux_path], device="cpu", dtype="float32") as bare:
        assert bare.models()[0].controls == []
        with pytest.raises(EngineError) as err:
            run(bare, flux_job(controls=[Control("reference", "a")]))
        assert (err.value.field, err.value.code) == ("controls[0].kind", ErrorCode.NO_CONTROL_MODEL)
        assert f"hf download {REDUX_REPO}" in str(err.value) and "style_models/" in str(err.value)
    root = tmp_path / "ComfyUI" / "models"
    shutil.copytree(redux, root / "style_models" / "FLUX.1-Redux-dev")
    with Engine([tiny_flux_path], device="cpu", dtype="float32", models_dir=[str(root)]) as eng:
        assert eng.models()[0].controls == ["reference", "style"]
        (guided,) = run(eng, flux_job(controls=[Control("reference", "a", 0.7)]))
    assert_close(guided, run(engine, flux_job(controls=[Control("reference", "a", 0.7)]))[0])


def test_comfyui_single_files(tiny_flux_path, tmp_path):
    """style_models/ + clip_vision/ single files equal the same weights as a diffusers folder (the encoder's
    config from the shapes: one head per 64 wide, so the folder's encoder has one head too)."""
    from helpers.tiny_redux import comfyui_redux_files

    folder = build_tiny_redux(tmp_path / "FLUX.1-Redux-dev", seed=3, heads=1)
    root = tmp_path / "ComfyUI" / "models"
    comfyui_redux_files(folder, root)
    j = flux_job(controls=[Control("reference", "a", 0.7)])
    with Engine([tiny_flux_path], device="cpu", dtype="float32", models_dir=[str(root)]) as eng:
        assert eng.models()[0].controls == ["reference", "style"]
        (guided,) = run(eng, j)
    with Engine([tiny_flux_path], device="cpu", dtype="float32", ip_adapters=[folder]) as eng:
        assert np.array_equal(np.asarray(guided), np.asarray(run(eng, j)[0]))
        assert diff(guided, run(eng, flux_job())[0]) > 3


def test_easel_serve_ip_adapter_and_generate_reference(engine, tiny_flux_path, redux, tmp_path):
    """A real ``easel serve --ip-adapter REDUX`` and ``easel generate --reference``."""
    from helpers.cli_runs import easel
    from helpers.server_harness import running_server

    picture().save(tmp_path / "a.png")
    (expected,) = run(engine, flux_job(controls=[Control("reference", "a", 0.8)]))
    with running_server([tiny_flux_path], "--ip-adapter", redux) as url:
        out = tmp_path / "out.png"
        done = easel("generate", "--url", url, "--prompt", PROMPT, "--steps", "3", "--seed", "7", "--guidance",
                     "3.5", "--width", str(SIZE), "--height", str(SIZE), "--exact-size", "--quiet", "--reference",
                     f"{tmp_path / 'a.png'}@0.8", "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert_close(Image.open(out).convert("RGB"), expected)
        bad = easel("generate", "--url", url, "--prompt", PROMPT, "--steps", "3", "--width", str(SIZE), "--height",
                    str(SIZE), "--quiet", "--reference", f"face={tmp_path / 'a.png'}", "--out", str(out))
        assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr
        assert "FLUX Redux" in bad.stderr and "use kind reference" in bad.stderr
