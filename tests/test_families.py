"""The model family as one type: each family's capabilities, its wire form, and that no module
outside families.py compares family names."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import easel
from easel.server.families import FEATURES, LAYERS, MODES, SKETCH, Family
from easel.server.traits import Traits, guess

PACKAGE = Path(easel.__file__).resolve().parent
REPO = PACKAGE.parent.parent
NAMES = {f.value for f in Family}
SD_FEATURES = ["negative_prompt", "scheduler", "loras", "control_model", "variation_seed", "regions"]

# family: native, latent channels, size step at vae scale 8, flow, default (steps, guidance), features
CAPABILITIES = {
    Family.SD1: (512, 4, 8, False, (20, 7.5), SD_FEATURES),
    Family.SD2: (768, 4, 8, False, (20, 7.5), SD_FEATURES),
    Family.SDXL: (1024, 4, 8, False, (25, 6.0), [*SD_FEATURES, "refiner"]),
    Family.SD3: (1024, 16, 16, True, (28, 7.0), ["negative_prompt", "loras", "variation_seed"]),
    Family.FLUX: (1024, 16, 16, True, (28, 3.5), ["loras", "variation_seed"]),
    Family.DEMO: (64, 4, 8, False, (20, 7.5), SD_FEATURES),
}


@pytest.mark.parametrize("family", list(CAPABILITIES))
def test_each_familys_capabilities(family):
    native, channels, step, flow, defaults, features = CAPABILITIES[family]
    assert (family.native, family.latent_channels, family.size_step(8), family.flow) == (native, channels, step, flow)
    assert family.defaults() == defaults and family.features == features and family.served
    assert family.modes == MODES == ("txt2img", "img2img", "inpaint")
    assert [f for f in FEATURES if family.unsupported(f) is None] == features


def test_why_not_is_said_per_family():
    assert Family.FLUX.unsupported("negative_prompt") == "FLUX.1 is guidance-distilled and has no negative prompt"
    assert Family.SD3.unsupported("scheduler") == "SD 3/3.5 runs its own flow-matching scheduler"
    assert Family.FLUX.unsupported("control_model") == "the sketch ControlNets are SD 1.x/2.x/SDXL ControlNets"
    assert Family.SDXL_REFINER.unsupported("controls") == "control layers are for SD 1.x/2.x/SDXL/SD 3/3.5/FLUX.1 models"
    assert Family.FLUX.unsupported("controls") is None
    assert Family.SD3.control_unsupported("img2img") == ("SD 3/3.5 ControlNets run text to image only (diffusers has "
                                                         "no SD 3/3.5 ControlNet pipeline for image to image)")
    assert Family.FLUX.control_unsupported("inpaint") is None
    assert Family.SD1.unsupported("refiner") == Family.SD3.unsupported("refiner") == "the refiner is SDXL's"
    assert Family.SDXL.unsupported("refiner") is None and Family.SD3.unsupported("negative_prompt") is None


def test_variants_sizes_and_contexts():
    assert Family.SD2.native_for(v_prediction=False) == 512 and Family.SD2.native_for(v_prediction=True) == 768
    assert Family.SD2.mixes_prediction and not Family.SD1.mixes_prediction
    assert Family.SDXL.native_for(v_prediction=False) == 1024
    assert Family.SD1.defaults("lcm") == (4, 1.0) and Family.FLUX.defaults("flux-schnell") == (4, 0.0)
    assert Family.SD3.defaults("sd3.5-medium") == (40, 4.5)
    assert [Family.of_context(w) for w in (768, 1024, 2048, 1280, 64, None)] == [
        Family.SD1, Family.SD2, Family.SDXL, Family.SDXL_REFINER, None, None]
    assert not Family.SDXL_REFINER.served  # listed as a refiner, never served as a model
    assert Family.SDXL.takes_refiner and not Family.SD1.takes_refiner


def test_second_pass_defaults_and_toys():
    """The second pass's strength and whether ``hires: auto`` runs it are the family's; the demo is the toy."""
    assert {f: f.hires_strength for f in Family} == {**dict.fromkeys(Family, 0.5), Family.SDXL: 0.4}
    assert [f for f in Family if f.toy] == [f for f in Family if not f.second_pass_auto] == [Family.DEMO]


def test_control_kinds_and_pipelines():
    """The sketch ControlNet fits SD 1.x/2.x/SDXL (and the SD-style demo), control layers those and SD 3/3.5
    (text to image only) and FLUX.1; the classes exist in diffusers."""
    import diffusers

    assert [f for f in Family if f.fits_control(SKETCH)] == [Family.SD1, Family.SD2, Family.SDXL, Family.DEMO]
    assert [f for f in Family if f.fits_control(LAYERS)] == [Family.SD1, Family.SD2, Family.SDXL, Family.SD3,
                                                             Family.FLUX, Family.DEMO]
    assert Family.SDXL.pipeline_class("img2img", control=SKETCH) == "StableDiffusionXLControlNetImg2ImgPipeline"
    assert Family.SDXL.pipeline_class("inpaint", SKETCH, union=True) == "StableDiffusionXLControlNetUnionInpaintPipeline"
    assert Family.FLUX.pipeline_class("inpaint", SKETCH, union=True) == "FluxControlNetInpaintPipeline"
    assert Family.SD3.pipeline_class("txt2img", SKETCH) == "StableDiffusion3ControlNetPipeline"
    with pytest.raises(ValueError, match="text to image only"):
        Family.SD3.pipeline_class("img2img", SKETCH)
    assert [Family.of_controlnet_class(c) for c in ("FluxControlNetModel", "SD3ControlNetModel", "ControlNetUnionModel",
                                                    "ControlNetModel")] == [Family.FLUX, Family.SD3, Family.SDXL, None]
    assert Family.SD2.pipeline_class("inpaint") == "StableDiffusionInpaintPipeline"
    assert (Family.SD2.pipeline_label, Family.DEMO.pipeline_label, Family.SDXL.pipeline_label) == (
        "SD 1.x/2.x", "SD 1.x/2.x", "SDXL")
    for family in Family:
        for mode in family.modes:
            assert hasattr(diffusers, family.pipeline_class(mode)), (family, mode)
            if mode in family.control_modes:
                assert hasattr(diffusers, family.pipeline_class(mode, control=LAYERS)), (family, mode)
                assert hasattr(diffusers, family.pipeline_class(mode, LAYERS, union=True)), (family, mode)
        for union in (False, True):
            assert hasattr(diffusers, family.controlnet_class(union)), family
    assert [Family.of_pipeline(c) for c in ("FluxImg2ImgPipeline", "StableDiffusionXLPipeline",
                                            "StableDiffusion3Pipeline", "StableDiffusionPipeline", "Other")] == [
        Family.FLUX, Family.SDXL, Family.SD3, Family.SD1, None]
    with pytest.raises(ValueError, match="unknown mode 'paint'"):
        Family.SD1.pipeline_class("paint")


def test_the_wire_keeps_the_family_strings():
    """A Family is the same string on the wire, in messages and in comparisons as before."""
    assert json.dumps({"family": Family.SDXL_REFINER}) == '{"family": "sdxl-refiner"}'
    assert f"{Family.SD3} / {Family.FLUX!s} / %s" % Family.SD1 == "sd3 / flux / sd1"
    assert Family.SDXL == "sdxl" and {Family.SD2: 1}["sd2"] == 1 and Family("demo") is Family.DEMO
    traits = Traits("sdxl", (1024, 1024), 25, 6.0)  # a plain string becomes the type
    assert traits.family is Family.SDXL and traits.size_step == 8 and not traits.flow
    flux = guess("black-forest-labs/FLUX.1-schnell")
    assert (flux.family, flux.few_step, flux.size_step, flux.native) == (Family.FLUX, True, 16, (1024, 1024))


def test_model_info_holds_the_type_and_sends_the_string():
    """``ModelInfo.family`` is a Family (a plain string becomes one); its dict (the welcome) holds the plain
    string, and it pickles (the Ray path sends results across processes) as the same member."""
    import pickle

    from easel.server.engine.types import ModelInfo

    info = ModelInfo("x", "sdxl", (1024, 1024), 25, 6.0, "hub")
    assert info.family is Family.SDXL and info.family.takes_refiner
    sent = info.to_dict()["family"]
    assert type(sent) is str and sent == "sdxl" and json.dumps(info.to_dict())
    assert pickle.loads(pickle.dumps(info)).family is Family.SDXL
    with pytest.raises(ValueError, match="'sdxxl' is not a valid Family"):
        ModelInfo("x", "sdxxl", (1024, 1024), 25, 6.0, "hub")


def _family_comparisons(path: Path, root: Path = REPO) -> list[str]:
    """Comparisons of a value with a family name written as a string ("sdxl", ("sd1", "sd2") ...)."""
    def names(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in NAMES
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names(e) for e in node.elts)
        return False

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            # `"flux" in name` looks for a word in a model's name: not a family comparison
            word_search = len(operands) == 2 and isinstance(node.ops[0], (ast.In, ast.NotIn)) \
                and isinstance(operands[0], ast.Constant)
            if not word_search and any(names(o) for o in operands):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_outside_families_compares_family_names():
    """Ask the type (``family.flow``, ``family.unsupported(...)``, ``features``), never ``family == "sdxl"``."""
    files = [p for folder in (PACKAGE, REPO / "plugin_krita", REPO / "plugin_gimp", REPO / "bench")
             for p in folder.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    # (hidden folders are venvs, e.g. the bench's bench/.venv-openvino)
    found = [hit for p in files if p != PACKAGE / "server" / "families.py" for hit in _family_comparisons(p)]
    assert found == []


def test_the_guard_sees_comparisons(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('a = family == "sdxl"\nb = m.get("family") != "flux"\nc = f in ("sd1", "sd2")\n'
                     'd = "flux" in name\ne = x == "other"\n', encoding="utf-8")
    hits = [h.split(": ", 1)[1] for h in _family_comparisons(probe, tmp_path)]
    assert hits == ["family == 'sdxl'", "m.get('family') != 'flux'", "f in ('sd1', 'sd2')"]
