"""Regional prompts (``GenerateRequest.regions``, engine/regional.py): the cross-attention processor itself
(which token block each query pixel attends to, at every resolution of real tiny UNets), the demo model
painting each half in its region's colour, jobs without regions untouched, selections cropping the masks,
errors, and ``easel generate --region`` against a real server."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.codes import ErrorCode
from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest, ProtocolError, Region, parse_region
from easel.client.protocol import Image as WireImage
from easel.server.engine import Engine, EngineError, EngineJob, regional
from helpers.engine_checks import arr, assert_close, run
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)  # 2 shared cores
W, H = 128, 64  # non-square: the masks' maps must keep their orientation at every level


def halves(w: int = W, h: int = H) -> tuple[Image.Image, Image.Image]:
    """Masks of the left and the right half (white = the region)."""
    left = Image.new("RGB", (w, h), 0)
    left.paste((255, 255, 255), (0, 0, w // 2, h))
    return left, Image.eval(left, lambda v: 255 - v)


def one_hot_attention(dim: int = 4):
    """A real diffusers cross-attention whose output is its value tokens unchanged (identity value and
    output projections, one head): with block ``b``'s tokens all the unit vector e_b, a pixel's output
    says how much it attended to each block."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    attn = Attention(query_dim=dim, cross_attention_dim=dim, heads=1, dim_head=dim, processor=AttnProcessor2_0())
    with torch.no_grad():
        for lin in (attn.to_v, attn.to_out[0]):
            lin.weight.copy_(torch.eye(dim))
            if lin.bias is not None:
                lin.bias.zero_()
    return attn


def blocks_text(blocks: int, block: int, dim: int = 4) -> torch.Tensor:
    return torch.cat([torch.eye(dim)[b].expand(block, dim) for b in range(blocks)])[None]


def test_processor_blends_blocks_by_mask_at_every_resolution():
    """Outside every region a pixel attends only to the base block; inside a region only to that region's
    block (its text is the base + the region's); a soft mask weights; overlaps blend; at 1/2 and 1/4 of the
    masks' size (the UNet's lower levels) the same, with the masks resized."""
    attn = one_hot_attention()
    masks = torch.zeros(2, 32, 64)  # 1: left, soft 0.25 in its top-left corner; 2: right; a gap between
    masks[0, :, :24] = 1.0
    masks[0, :4, :4] = 0.25
    masks[1, :, 40:] = 1.0
    masks[0, 16:, 48:] = 1.0  # overlaps region 2 in the bottom-right quarter
    processor = regional.RegionalAttention(attn.processor, regional.RegionMasks(masks, block=3))
    text = blocks_text(3, 3).expand(2, -1, -1)
    for scale in (1, 2, 4):
        h, w = 32 // scale, 64 // scale
        hidden = torch.randn(2, h * w, 4)  # two images (a CFG pair): the same masks for both
        out = processor(attn, hidden, text).reshape(2, h, w, 4)

        def at(y: int, x: int, out=out, scale=scale) -> torch.Tensor:  # y, x in the masks' 32x64 grid
            return out[1, y // scale, x // scale]

        torch.testing.assert_close(at(8, 32), torch.tensor([1.0, 0, 0, 0]))  # no region: base only
        torch.testing.assert_close(at(8, 8), torch.tensor([0.0, 1, 0, 0]))  # region 1 only
        torch.testing.assert_close(at(8, 56), torch.tensor([0.0, 0, 1, 0]))  # region 2 only
        torch.testing.assert_close(at(28, 60), torch.tensor([0.0, 0.5, 0.5, 0]))  # overlap: they share
        if scale == 1:
            torch.testing.assert_close(at(1, 1), torch.tensor([0.75, 0.25, 0, 0]))  # soft: weighted
    # self-attention and other token counts pass through to the original processor
    hidden = torch.randn(2, 2048, 4)
    torch.testing.assert_close(processor(attn, hidden, None), attn.processor(attn, hidden, None))
    torch.testing.assert_close(processor(attn, hidden, text[:, :4]), attn.processor(attn, hidden, text[:, :4]))


def test_map_size_follows_the_unets_rounding():
    masks = regional.RegionMasks(torch.zeros(1, 13, 7), block=2)
    assert [masks.map_size(n) for n in (91, 28, 8, 2)] == [(13, 7), (7, 4), (4, 2), (2, 1)]
    with pytest.raises(EngineError, match="no scale"):
        masks.map_size(30)


@pytest.fixture(scope="module")
def sd(tiny_sd_path):
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as eng:
        yield eng


def region_job(**kw) -> EngineJob:
    left, right = halves()
    kw.setdefault("regions", [Region("l", "a green dog"), Region("r", "a blue house", "dark")])
    kw.setdefault("attached", {"l": left, "r": right})
    kw.setdefault("negative_prompt", "blurry")
    return EngineJob("txt2img", "a red cat", steps=3, seeds=[5, 6], width=W, height=H, **kw)


@pytest.mark.parametrize("model", ["sd", "sdxl"])
def test_every_cross_attention_of_a_real_unet_is_masked(model, request, tiny_sd_path, tiny_sdxl_path):
    """In a real pipeline call on a tiny random SD 1.5 / SDXL UNet, each cross-attention (every level,
    down, mid and up) gives the base block's attention outside the regions and a region's inside."""
    path = tiny_sd_path if model == "sd" else tiny_sdxl_path
    with Engine([path], device="cpu", dtype="float32") as eng:
        pipe = eng.pipeline(None)
        job = region_job()
        masks = regional.job_masks(job)
        prompts, weights = regional.encode(pipe, job, masks)
        calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        with regional.applied(pipe, weights):
            modules = regional.cross_attentions(pipe.unet)
            assert modules and all(isinstance(m.processor, regional.RegionalAttention) for m in modules)
            for m in modules:
                inner = m.processor

                def record(attn, hidden, encoder_hidden_states=None, attention_mask=None, _inner=inner, **kw):
                    text, more = encoder_hidden_states, {"attention_mask": attention_mask, **kw}
                    out = _inner(attn, hidden, encoder_hidden_states=text, **more)
                    base = _inner.original(attn, hidden, encoder_hidden_states=text[:, :weights.block], **more)
                    right = _inner.original(attn, hidden, encoder_hidden_states=text[:, 2 * weights.block:], **more)
                    calls.append((hidden.shape[1], out - base, out - right))
                    return out

                m.set_processor(record)
            pipe(**prompts, num_inference_steps=1, width=W, height=H, output_type="latent",
                 generator=torch.Generator().manual_seed(0))
        assert all(not isinstance(m.processor, regional.RegionalAttention) for m in modules)  # restored
    sizes = sorted({n for n, _, _ in calls})
    assert sizes and max(sizes) < (W // 8) * (H // 8), sizes  # maps below the latent's size: masks resized
    for n, minus_base, minus_right in calls:
        h, w = weights.map_size(n)
        assert w == 2 * h
        minus_right, minus_base = (d.reshape(d.shape[0], h, w, -1) for d in (minus_right, minus_base))
        assert minus_right[:, :, w // 2 + 1:].abs().max() < 1e-5  # right half: region 2's block
        if h > 2:  # left of the blurred edge: region 1's, never the base's
            assert minus_base[:, :, : w // 2 - 1].abs().max() > 1e-4


def test_coverage_rules_and_jobs_without_regions_untouched(sd):
    """A region covering nothing gives the base prompt's picture; one covering everything gives the picture
    of its own text (the base's + ", " + its own) and negatives; and the job after them, without regions,
    is bit-exact to one before them."""
    plain = EngineJob("txt2img", "a red cat", "blurry", steps=3, seeds=[5, 6], width=W, height=H)
    before = run(sd, plain)
    assert_coverage_rules(sd, "blurry")
    halves_job = run(sd, region_job())  # a batch of two
    assert all(np.abs(arr(a) - arr(b)).mean() > 1 for a, b in zip(halves_job, before, strict=True))
    varied = run(sd, region_job(variation_seed=9, variation_strength=0.5))
    assert all(np.abs(arr(a) - arr(b)).mean() > 1 for a, b in zip(varied, halves_job, strict=True))
    after = run(sd, plain)
    assert all(np.array_equal(arr(a), arr(b)) for a, b in zip(after, before, strict=True))
    modules = regional.cross_attentions(sd.pipeline(None).unet)
    assert modules and not any(isinstance(m.processor, regional.RegionalAttention) for m in modules)


def assert_coverage_rules(engine: Engine, negative: str, full: bool = True) -> None:
    """No region covered: the base prompt's picture; all covered (``full``): the region's text and negatives'."""
    cases = ((0, "a red cat", "dark"), (255, "a red cat, a green dog", "dark"))
    for fill, prompt, region_negative in cases if full else cases[:1]:
        mask = Image.new("RGB", (W, H), (fill,) * 3)
        got = run(engine, region_job(negative_prompt=negative, regions=[Region("l", "a green dog", region_negative)],
                                     attached={"l": mask}))
        want = ", ".join(n for n in (negative, region_negative) if n) if fill else negative
        same = run(engine, EngineJob("txt2img", prompt, want, steps=3, seeds=[5, 6], width=W, height=H))
        for a, b in zip(got, same, strict=True):
            assert_close(a, b)


def test_coverage_rules_on_sdxl(tiny_sdxl_path):
    """SDXL, where no region covers: the base prompt's picture, with an empty negative (zeros, as the pipeline
    makes them) or not. (Covering everything is not the region text's picture here: the pooled embedding
    stays the base prompt's.)"""
    with Engine([tiny_sdxl_path], device="cpu", dtype="float32") as eng:
        assert_coverage_rules(eng, "", full=False)
        assert_coverage_rules(eng, "blurry", full=False)


def test_demo_model_paints_each_half_in_its_regions_colour():
    """The demo model: a red and a blue square alone come out red (or orange) and blue; "a red" / "a blue"
    regions make a warm and a cool half (mean colour, measured R-B about +70 and -60), and swapping the
    regions swaps them."""
    from easel.server.demo import DEMO_ID, measure

    left, right = halves()
    with Engine([DEMO_ID], device="cpu") as eng:
        for seed in (0, 1):
            for word, hues in (("red", {"red", "orange"}), ("blue", {"blue"})):  # what the demo can do alone
                image = run(eng, EngineJob("txt2img", f"a big {word} square", seeds=[seed], width=64, height=64))[0]
                assert measure.colour_of(image) in hues, (seed, word)
            for first, second in (("a red", "a blue"), ("a blue", "a red")):
                job = EngineJob("txt2img", "a big square", seeds=[seed], width=W, height=H,
                                regions=[Region("l", first), Region("r", second)], attached={"l": left, "r": right})
                rgb = arr(run(eng, job)[0])
                for half, word in ((rgb[:, : W // 2], first), (rgb[:, W // 2:], second)):
                    r, _, b = half.reshape(-1, 3).mean(0)
                    warmth = (r - b) if word == "a red" else (b - r)
                    assert warmth > 30, (seed, first, word, r, b)


def test_errors_name_the_field(sd, tiny_sd3_path):
    with pytest.raises(ProtocolError) as err:
        GenerateRequest.from_message({"job": "j", "prompt": "x", "regions": [{"mask": "m", "prompt": " "}]})
    assert err.value.field == "regions[0].prompt"
    with pytest.raises(ProtocolError) as err:
        GenerateRequest.from_message({"job": "j", "prompt": "x", "regions": [{"mask": "m", "prompt": "a"}] * 9})
    assert err.value.field == "regions" and "at most 8" in str(err.value)
    with pytest.raises(ProtocolError, match="MASK=PROMPT"):
        parse_region("left.png")
    assert parse_region("left.png=a red cat, big") == {"mask": "left.png", "prompt": "a red cat, big"}
    with pytest.raises(EngineError) as err:
        run(sd, region_job(attached={"l": halves()[0]}))
    assert err.value.field == "regions[1].mask" and "'r'" in str(err.value)
    with pytest.raises(EngineError) as err:
        run(sd, region_job(attached={"l": halves()[0], "r": Image.new("RGB", (64, 64))}))
    assert err.value.field == "regions[1].mask" and "64x64" in str(err.value)
    from easel.server.families import Family

    assert [f for f in Family if f.served and "regions" in f.features] == [Family.SD1, Family.SD2, Family.SDXL, Family.DEMO]
    with Engine([tiny_sd3_path], device="cpu", dtype="float32") as eng:  # refused before loading anything
        with pytest.raises(EngineError) as err:
            run(eng, region_job())
        assert (err.value.field, err.value.code) == ("regions", ErrorCode.UNSUPPORTED_FEATURE)
        assert "transformer" in str(err.value) and eng.load_count == 0


def wire(img: Image.Image) -> WireImage:
    return WireImage.rgba(img.width, img.height, img.convert("RGBA").tobytes())


def recording(engine: Engine) -> list[EngineJob]:
    """The engine jobs ``engine`` runs from now on (its ``run`` wrapped)."""
    jobs: list[EngineJob] = []
    run_job = engine.run

    def run_and_record(job, progress, cancelled):
        jobs.append(job)
        return run_job(job, progress, cancelled)

    engine.run = run_and_record  # type: ignore[method-assign]
    return jobs


def pixels(result) -> np.ndarray:
    image = result.images[0]
    return np.frombuffer(image.image.data, np.uint8).reshape(image.image.height, image.image.width, 4)


def test_passes_in_tiles_give_each_tile_the_regions_that_cover_it(tiny_sd_path):
    """The second pass (a 256x128 picture of a 64 px model) and the tiled upscale: each tile's job has the
    regions whose mask covers some of it, with the mask cropped to the tile; the first pass both, whole."""
    left, right = halves(256, 128)
    regions = [Region("l", "a green dog"), Region("r", "a blue house")]
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as eng, inprocess_server(eng) as (url, _):
        jobs = recording(eng)
        with Client(url, image_format="rgba") as client:
            result = client.generate(GenerateRequest(job=new_job_id(), prompt="a red cat", steps=2, width=256,
                                                     height=128, hires="on", regions=regions),
                                     attachments={"l": wire(left), "r": wire(right)})
            assert result.parameters["regions"] == [{"prompt": "a green dog"}, {"prompt": "a blue house"}]
            small = [m.resize((64, 32)) for m in (left, right)]
            client.generate(GenerateRequest(job=new_job_id(), prompt="a red cat", steps=4, strength=0.5, upscale=4,
                                            regions=regions),
                            attachments={"image": wire(Image.new("RGB", (64, 32), (90, 120, 150))),
                                         "l": wire(small[0]), "r": wire(small[1])})
    first, *tiles = jobs
    assert [r.mask for r in first.regions] == ["l", "r"] and first.attached["l"].size == (first.width, first.height)
    assert len(tiles) > 4 and {tuple(r.mask for r in t.regions or []) for t in tiles} >= {("l",), ("r",), ("l", "r")}
    for t in tiles:
        assert all(t.attached[r.mask].size == (t.width, t.height) and np.asarray(t.attached[r.mask]).any()
                   for r in t.regions or [])


def test_a_selection_crops_the_region_masks(tiny_sd_path):
    """Inpainting a selection on the left of a wide canvas: a region on the far right is cropped away (the
    picture is the base prompt's, within one 8-bit step), one over the selection changes it."""
    canvas = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 256, 3), np.uint8))
    selection = Image.new("L", (256, 128), 0)
    selection.paste(255, (16, 16, 48, 48))
    far = Image.new("RGB", (256, 128), 0)
    far.paste((255, 255, 255), (192, 0, 256, 128))
    near = Image.new("RGB", (256, 128), 0)
    near.paste((255, 255, 255), (0, 0, 96, 128))
    sent = {"image": wire(canvas), "mask": WireImage.gray(256, 128, selection.tobytes())}
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as eng, inprocess_server(eng) as (url, _):
        with Client(url, image_format="rgba") as client:
            def generate(mask: Image.Image | None) -> np.ndarray:
                regions = [Region("m", "a green dog")] if mask is not None else None
                return pixels(client.generate(GenerateRequest(
                    job=new_job_id(), prompt="a red cat", steps=3, seed=1, padding=0.0, regions=regions),
                    attachments={**sent, **({"m": wire(mask)} if mask is not None else {})}))
            plain = generate(None).astype(int)
            assert np.abs(generate(far).astype(int) - plain).max() <= 1
            assert np.abs(generate(near).astype(int) - plain).mean() > 1


def test_cli_region_flag_against_a_real_server(tmp_path, capsys):
    """``easel generate --region MASK=PROMPT`` (repeatable) on the demo model: a warm left and a cool right
    half; a bad flag and a mask of the wrong size are one-line errors naming what to fix."""
    from easel.cli import main
    from easel.server.demo import DEMO_ID

    left, right = halves()
    left.save(tmp_path / "left.png")
    right.save(tmp_path / "right.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "small.png")
    out = tmp_path / "out.png"
    with Engine([DEMO_ID], device="cpu") as eng, inprocess_server(eng) as (url, _):
        base = ["generate", "--url", url, "--prompt", "a big square", "--seed", "0", "--quiet", "--out", str(out)]
        code = main([*base, "--width", str(W), "--height", str(H), "--exact-size",
                     "--region", f"{tmp_path / 'left.png'}=a red", "--region", f"{tmp_path / 'right.png'}=a blue"])
        assert code == 0
        rgb = np.asarray(Image.open(out).convert("RGB"), float)
        (lr, _, lb), (rr, _, rb) = (rgb[:, : W // 2].reshape(-1, 3).mean(0), rgb[:, W // 2:].reshape(-1, 3).mean(0))
        assert lr - lb > 30 and rb - rr > 30
        capsys.readouterr()
        assert main([*base, "--region", str(tmp_path / "left.png")]) == 2
        err = capsys.readouterr().err
        assert "MASK=PROMPT" in err and "Traceback" not in err
        code = main([*base, "--image", str(tmp_path / "left.png"), "--region", f"{tmp_path / 'small.png'}=a red"])
        err = capsys.readouterr().err
        assert code != 0 and "regions[0].mask" in err and "64x64" in err and "Traceback" not in err


def test_regions_with_a_reference_image(tiny_sd_path, tmp_path):
    """With an IP-Adapter reference (its processors on the same cross-attentions, the image tokens beside the
    text): a region covering everything gives the reference job of the region's text, and the reference acts."""
    from easel.client.protocol import Control
    from helpers.tiny_ip_adapter import build_tiny_ip_adapter_repo

    repo = build_tiny_ip_adapter_repo(tmp_path / "IP-Adapter", tiny_sd_path)
    picture = Image.new("RGB", (40, 40), (200, 30, 30))
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    reference = [Control("reference", "a")]

    def job(prompt: str, **kw) -> EngineJob:
        return EngineJob("txt2img", prompt, steps=3, seeds=[7], width=64, height=64, **kw)

    with Engine([tiny_sd_path], device="cpu", dtype="float32", ip_adapters=[repo]) as eng:
        regional_job = job("a red cat", controls=reference, regions=[Region("m", "a green dog")],
                           attached={"a": picture, "m": white})
        same = job("a red cat, a green dog", controls=reference, attached={"a": picture})
        assert_close(run(eng, regional_job)[0], run(eng, same)[0])
        without = run(eng, job("a red cat, a green dog"))[0]
        assert np.abs(arr(without) - arr(run(eng, same)[0])).mean() > 1
