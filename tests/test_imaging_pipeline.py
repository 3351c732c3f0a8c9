"""Selection work through real diffusers pipelines (a tiny random-weight SD and, once trained, the demo).

Everything goes plan -> prepare -> Engine.run -> composite, exactly as the generation service does.
Random weights paint noise, which is fine here: what is checked is geometry and compositing.
"""

from __future__ import annotations

import numpy as np
import pytest

from easel.server.imaging.compose import composite, flatten, prepare, resize
from easel.server.imaging.geometry import Bounds
from easel.server.imaging.masks import composite_mask, dilate
from easel.server.imaging.metrics import seam_ratio
from easel.server.imaging.region import plan_work
from helpers.pictures import box_mask, texture

torch = pytest.importorskip("torch")
from helpers import tiny_models  # noqa: E402 - a missing helper is an error, not a skip

engine_mod = pytest.importorskip("easel.server.engine")
from easel.server.engine.types import EngineJob  # noqa: E402


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    folder = tiny_models.build_tiny_sd(tmp_path_factory.mktemp("imaging") / "tiny-sd")
    engine = engine_mod.Engine([folder], device="cpu")
    yield engine
    engine.close()


def run(engine, image, mask, origin=(0, 0), canvas=None, **overrides):
    """One selection edit, end to end. Returns (plan, generated image, layer)."""
    info = engine.model_info(None)
    h, w = image.shape[:2]
    plan = plan_work((w, h), mask, info.native, origin=origin, canvas=canvas, **overrides)
    work_image, work_mask = prepare(plan, image, mask)
    job = EngineJob(mode=plan.mode, prompt="a red apple", seeds=[7], width=plan.work.width,
                    height=plan.work.height, steps=2, strength=1.0, image=work_image, mask=work_mask, preview=False)
    (generated,) = engine.run(job, lambda p: None, lambda: False)
    assert generated.size == plan.work.as_tuple()
    return plan, generated, composite(plan, image, mask, generated)


def check_bit_exact(plan, image, mask, generated, layer, origin=(0, 0)):
    flat = flatten(image, layer, origin)
    cmask = np.zeros_like(mask)
    cmask[plan.region.slices] = composite_mask(mask[plan.region.slices], plan.feather)
    assert np.array_equal(flat[cmask == 0], image[cmask == 0])
    gen = np.zeros_like(image[..., :3])
    gen[plan.region.slices] = resize(np.asarray(generated), plan.region.extent)
    assert np.array_equal(flat[mask == 255][:, :3], gen[mask == 255])
    return flat


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_selection_at_every_corner(tiny_engine, corner):
    w, h, sw, sh = 201, 150, 37, 29
    x = 0 if "left" in corner else w - sw
    y = 0 if "top" in corner else h - sh
    image, mask = texture(w, h), box_mask(w, h, (x, y, sw, sh))
    origin = (300, 40)  # the plugin sent a region of a bigger document
    plan, generated, layer = run(tiny_engine, image, mask, origin, canvas=(1000, 800))
    assert layer.bounds.contains(Bounds(x, y, sw, sh).offset(*origin))
    assert Bounds(*origin, w, h).contains(layer.bounds)
    if "left" in corner:
        assert layer.x == origin[0]
    else:
        assert layer.bounds.right == origin[0] + w
    check_bit_exact(plan, image, mask, generated, layer, origin)


def test_soft_selection_and_odd_size_round_trip(tiny_engine):
    w, h = 1001, 777
    image = texture(w, h, seed=2)
    mask = box_mask(w, h, (400, 300, 120, 90), value=128)
    mask[320:370, 420:500] = 255
    plan, generated, layer = run(tiny_engine, image, mask)
    flat = check_bit_exact(plan, image, mask, generated, layer)
    gen = np.zeros_like(image[..., :3])
    gen[plan.region.slices] = resize(np.asarray(generated), plan.region.extent)
    soft = (mask == 128) & (dilate(np.where(mask == 255, mask, 0), plan.feather) == 0)  # past the core's fade
    assert soft.sum() > 1000
    want = (gen[soft].astype(int) * 128 + image[soft][:, :3].astype(int) * 127) / 255
    assert np.abs(flat[soft][:, :3].astype(int) - want).max() <= 1
    # full-canvas img2img at an odd size comes back whole, at 0, 0
    plan, generated, layer = run(tiny_engine, image, None)
    assert (layer.x, layer.y, layer.width, layer.height) == (0, 0, w, h) and (layer.rgba[..., 3] == 255).all()


def test_tiny_selection_and_seam_measurement(tiny_engine):
    w, h = 256, 192
    image = texture(w, h, seed=4)
    tiny = box_mask(w, h, (120, 90, 5, 5))
    plan, generated, layer = run(tiny_engine, image, tiny)
    assert plan.region.width >= 64 and plan.work.area >= 0.75 * 64 * 64
    check_bit_exact(plan, image, tiny, generated, layer)
    mask = box_mask(w, h, (80, 60, 96, 72))
    ratios = {}
    for feather in (0, None):
        plan, generated, layer = run(tiny_engine, image, mask, feather=feather)
        ratios[feather] = seam_ratio(flatten(image, layer), mask)
    assert all(np.isfinite(r) and r > 0 for r in ratios.values())
    assert ratios[None] <= ratios[0] * 1.05  # feathering never makes the border stand out more


def test_demo_model_selection_round_trip():
    engine = engine_mod.Engine(["easel-demo"], device="cpu")
    try:
        image = texture(300, 200, seed=5)
        mask = box_mask(300, 200, (250, 150, 50, 50))
        plan, generated, layer = run(engine, image, mask)
        check_bit_exact(plan, image, mask, generated, layer)
        assert layer.bounds.right == 300 and layer.bounds.bottom == 200
    finally:
        engine.close()
