"""The built-in demo model: loads offline from the committed files, follows prompts, and works
as img2img and inpaint through the stock StableDiffusion pipelines.

How pictures are graded (server/easel/server/demo/measure.py; docs/demo-model.md says the same):
- background = median colour of the 2-pixel border; foreground = the largest 4-connected blob of
  pixels more than 60 (RGB distance) away from it;
- colour = dominant hue of the foreground's chromatic pixels (10-degree histogram peak, refined
  by a circular mean), mapped to the nearest palette hue (red, orange, yellow, green, blue, purple);
- shape = fill ratio of the foreground within its bounding box: below 0.64 triangle (ideal 0.5),
  0.64-0.89 circle (ideal pi/4 = 0.785), above square (ideal 1.0);
- roundness = IoU of the foreground with the equal-area disc at its centroid (1.0 = disc).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from easel.server import builtin_models
from easel.server.demo import DEMO, DEMO_ID, evaluate, measure, model, shapes
from easel.server.demo import config as demo_config
from easel.server.demo.tokenizer import make_tokenizer

COLOUR_THRESHOLD = 0.80  #: required share of pictures whose colour is the prompt's
#: required share of pictures whose shape is the prompt's (chance is 1 in 5; measured 56-59% with the
#: committed weights: squares often come out with rounded corners and are read as circles)
SHAPE_THRESHOLD = 0.50
SEEDS = [0, 1, 2]
WHITE = (245, 245, 240)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    """Two threads on an idle 2-core box, one when it is busy (see train.pick_threads)."""
    from easel.server.demo.train import pick_threads

    before = torch.get_num_threads()
    torch.set_num_threads(pick_threads(0))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    return model.load_pipeline()


def _mean_abs(a: Image.Image, b: Image.Image, where: np.ndarray) -> float:
    d = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean(axis=-1) / 255.0
    return float(d[where].mean())


def test_committed_files_are_small_and_self_describing():
    weights = model.WEIGHTS_DIR / demo_config.WEIGHTS_NAME
    assert weights.stat().st_size < 10 * 2**20
    cfg = demo_config.read_config(model.WEIGHTS_DIR)
    assert cfg["format"] == demo_config.FORMAT and cfg["native"] == model.NATIVE
    tok = make_tokenizer(cfg["tokenizer"]["words"], cfg["tokenizer"]["model_max_length"])
    for word in cfg["tokenizer"]["words"]:
        assert len(tok(word).input_ids) == 3, word  # <start> word <end>


def test_text_encoder_keys_load_from_either_transformers_layout():
    flat = {"embeddings.token_embedding.weight": torch.zeros(1)}
    prefixed = {"text_model." + k: v for k, v in flat.items()}
    assert demo_config.match_text_encoder_keys(prefixed, set(flat)) == flat
    assert set(demo_config.match_text_encoder_keys(flat, set(prefixed))) == set(prefixed)


def test_stock_pipeline_native_64(pipe):
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert isinstance(pipe, StableDiffusionPipeline)
    assert isinstance(pipe.vae, AutoencoderKL) and pipe.vae_scale_factor == 8
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.tokenizer, CLIPTokenizer)
    assert all(p.dtype == torch.float32 for p in pipe.unet.parameters())
    img = pipe("a red circle", num_inference_steps=4, generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (model.NATIVE, model.NATIVE)
    big = pipe("a red circle", num_inference_steps=4, height=128, width=128).images[0]
    assert big.size == (128, 128)  # runs at a multiple; the engine upsamples for quality


def test_follows_prompts(pipe):
    """Every colour x shape in a fixed set, three seeds, the model's default steps and guidance."""
    results, acc = evaluate.grade(pipe, SEEDS, model.DEFAULT_STEPS, model.DEFAULT_GUIDANCE)
    misses = [f"{r.prompt} (seed {r.seed}): {r.got_colour} {r.got_shape}" for r in results
              if (r.got_colour, r.got_shape) != (r.colour, r.shape)]
    print(f"\ndemo model: colour {acc['colour']:.0%}, shape {acc['shape']:.0%}, both {acc['both']:.0%}"
          f" of {len(results)}; misses: {misses}")
    assert acc["colour"] >= COLOUR_THRESHOLD
    assert acc["shape"] >= SHAPE_THRESHOLD


def _red_blob() -> Image.Image:
    """A crude, lumpy, wider-than-tall red blob (roundness about 0.72), as a user might scribble."""
    img = Image.new("RGB", (128, 128), WHITE)
    pts = []
    for k in range(9):
        a = 2 * math.pi * k / 9
        rad = 36 * (1 + 0.3 * math.sin(3 * a + 0.5) + 0.12 * math.cos(5 * a))
        pts.append((64 + 1.08 * rad * math.cos(a), 66 + 0.8 * rad * math.sin(a)))
    ImageDraw.Draw(img).polygon(pts, fill=(200, 40, 35))
    return img.resize((64, 64), Image.BOX)


def test_sketch_to_image_makes_the_blob_a_red_circle(pipe):
    from diffusers import StableDiffusionImg2ImgPipeline

    i2i = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
    blob = _red_blob()
    before = measure.roundness(measure.foreground(blob))
    outs = []
    for seed in SEEDS:
        out = i2i("a red circle", image=blob, strength=0.6, num_inference_steps=model.DEFAULT_STEPS,
                  guidance_scale=model.DEFAULT_GUIDANCE, generator=torch.Generator().manual_seed(seed)).images[0]
        mask = measure.foreground(out)
        outs.append((measure.roundness(mask), measure.colour_of(out, mask)))
    print(f"\nsketch roundness {before:.3f} -> {[round(r, 3) for r, _ in outs]}, colours {[c for _, c in outs]}")
    assert all(c == "red" for _, c in outs)
    assert np.mean([r for r, _ in outs]) > before + 0.05


def test_inpaint_changes_only_the_selection():
    """Regenerate a selection through Easel's own path (engine + imaging + server + client), adding an object
    (``inpaint_mode`` add: auto would fill, which colour matches the hole to the plain background and leaves
    the toy model little to show): the selection is repainted, and every pixel outside the returned blend is
    bit-exact."""
    from easel.client.connection import Client, new_job_id
    from easel.client.protocol import GenerateRequest
    from easel.client.protocol import Image as WireImage
    from easel.server.engine import Engine
    from easel.server.imaging.compose import LayerResult, flatten
    from helpers.server_harness import inprocess_server

    spec = shapes.Spec("blue", "square", "", "", "white", 18, 32, 12, shapes.COLOURS["blue"], "")
    image = np.asarray(shapes.draw(spec).convert("RGBA"))
    sel = np.zeros((64, 64), dtype=np.uint8)
    sel[8:56, 32:64] = 255  # the right half, where there is only background
    engine = Engine([DEMO_ID], device="cpu", dtype="float32")
    with inprocess_server(engine) as (url, app), Client(url, image_format="rgba") as client:
        result = client.generate(GenerateRequest(job=new_job_id(), prompt="a red circle on the right", seed=0,
                                                 inpaint_mode="add"),
                                 WireImage.rgba(64, 64, image.tobytes()), WireImage.gray(64, 64, sel.tobytes()))
    item = result.images[0]
    layer = np.frombuffer(item.image.data, np.uint8).reshape(item.image.height, item.image.width, 4).copy()
    out = flatten(image, LayerResult(layer, item.x, item.y))
    alpha = np.zeros((64, 64), np.uint8)
    alpha[item.y:item.y + layer.shape[0], item.x:item.x + layer.shape[1]] = layer[..., 3]
    assert np.array_equal(out[alpha == 0], image[alpha == 0]), "pixels outside the selection changed"
    inner = sel > 0
    inner[:12], inner[52:], inner[:, :36] = False, False, False  # stay clear of the mask edge
    changed_in = _mean_abs(Image.fromarray(image[..., :3]), Image.fromarray(out[..., :3]), inner)
    print(f"\ninpaint mean |change| inside {changed_in:.3f}; outside the blend: none")
    # The toy model repaints the region but does not draw a clean red circle in a half-image
    # hole (it learnt whole pictures); what is asserted is what Easel guarantees.
    assert changed_in > 0.08


def test_toy_notice_says_how_to_serve_a_real_model():
    for needle in ("toy", "--model stabilityai/sd-turbo", "folder", ".safetensors", f"model {DEMO_ID!r}."):
        assert needle in model.TOY_NOTICE


def test_the_demo_is_a_registered_builtin_model():
    """The demo package registers the demo as a built-in model: the engine offers and loads it through the
    registry, with the package's traits, its loader's pipeline and its own fitted preview map."""
    from easel.server.engine import Engine
    from easel.server.families import Family

    assert builtin_models.find(DEMO_ID) is DEMO and builtin_models.fallback() is DEMO
    info = Engine([DEMO_ID], device="cpu", dtype="float32").model_info(None)
    assert (info.id, info.family, info.native, info.default_steps, info.default_guidance, info.source) == (
        DEMO_ID, Family.DEMO, (model.NATIVE,) * 2, model.DEFAULT_STEPS, model.DEFAULT_GUIDANCE, "builtin")
    assert DEMO.latent_preview() == model.latent_preview() is not None
    pipe = DEMO.load("cpu", torch.float32)
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.unet.dtype == torch.float32
