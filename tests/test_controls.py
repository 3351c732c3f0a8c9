"""Control layers (``GenerateRequest.controls``) on tiny real ControlNets: two SD 1.5 kinds at once in every
mode and the SDXL ControlNet Union, each equal to raw diffusers called directly with the same inputs; the
kinds found from names; errors; and ``easel generate --control`` against a real server."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.connection import Client, JobFailed, new_job_id
from easel.client.protocol import Control, GenerateRequest, ProtocolError, parse_control
from easel.client.protocol import Image as WireImage
from easel.server.engine import Engine, EngineError, EngineJob
from easel.server.features import check_names
from easel.server.results import parameters_text
from helpers.engine_checks import assert_close, gradient
from helpers.server_harness import inprocess_server
from helpers.tiny_models import build_tiny_controlnet, build_tiny_controlnet_union

torch.set_num_threads(1)  # 2 shared cores
SIZE = 64
LINEART, DEPTH, UNION = "control_v11p_sd15_lineart", "control_v11f1p_sd15_depth", "controlnet-union-sdxl-tiny"


@pytest.fixture(scope="module")
def assets(tiny_sd_path, tiny_sdxl_path, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("controls")
    return {"sd": str(tiny_sd_path), "xl": str(tiny_sdxl_path),
            "lineart": build_tiny_controlnet(tiny_sd_path, root / LINEART, seed=1),
            "depth": build_tiny_controlnet(tiny_sd_path, root / DEPTH, seed=2),
            "union": build_tiny_controlnet_union(tiny_sdxl_path, root / UNION, seed=3)}


@pytest.fixture(scope="module")
def engine(assets):
    with Engine([assets["sd"], assets["xl"]], device="cpu", dtype="float32",
                control_models=[assets["lineart"], assets["depth"], assets["union"]]) as eng:
        yield eng


def lines() -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE))
    img.paste((255, 255, 255), (10, 10, 30, 54))
    return img


def depth() -> Image.Image:
    ramp = np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8), (SIZE, 1))
    return Image.fromarray(np.dstack([ramp] * 3), "RGB")


def square_mask() -> Image.Image:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    return Image.fromarray(mask, "L")


def job(mode: str = "txt2img", controls: list[Control] | None = None, **kw) -> EngineJob:
    kw.setdefault("seeds", [7])
    if mode != "txt2img":
        kw.update(image=gradient(SIZE), strength=0.7)
    if mode == "inpaint":
        kw["mask"] = square_mask()
    return EngineJob(mode=mode, prompt="a red cat", width=SIZE, height=SIZE, steps=3, guidance=7.5,
                     controls=controls, attached={"a": lines(), "b": depth()}, **kw)


def two(strength_b: float = 0.8, start_b: float = 0.0, end_b: float = 1.0) -> list[Control]:
    return [Control("lineart", "a"), Control("depth", "b", strength_b, start_b, end_b)]


def run(engine: Engine, j: EngineJob) -> Image.Image:
    return engine.run(j, lambda p: None, lambda: False)[0]


def diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def raw(pipe, j: EngineJob, **control) -> Image.Image:
    """``j`` through a raw diffusers ControlNet pipeline, its control arguments given."""
    kwargs = dict(prompt=j.prompt, negative_prompt=None, num_inference_steps=j.steps, guidance_scale=j.guidance,
                  height=j.height, width=j.width, generator=torch.Generator("cpu").manual_seed(j.seeds[0]), **control)
    if j.mode != "txt2img":
        kwargs.update(image=j.image, strength=j.strength)
    if j.mode == "inpaint":
        kwargs["mask_image"] = j.mask
    return pipe(**kwargs).images[0]


MODES = {"txt2img": "", "img2img": "Img2Img", "inpaint": "Inpaint"}


@pytest.fixture(scope="module")
def raw_sd(assets):
    import diffusers

    nets = [diffusers.ControlNetModel.from_pretrained(assets[k], dtype=torch.float32) for k in ("lineart", "depth")]
    base = diffusers.StableDiffusionControlNetPipeline.from_pretrained(assets["sd"], controlnet=nets,
                                                                       dtype=torch.float32)
    out = {mode: getattr(diffusers, f"StableDiffusionControlNet{part}Pipeline").from_pipe(base)
           for mode, part in MODES.items()}
    for pipe in out.values():
        pipe.set_progress_bar_config(disable=True)
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_two_kinds_equal_raw_multi_controlnet(engine, raw_sd, mode):
    j = job(mode, two(0.8, 0.1, 0.9))
    guided = run(engine, j)
    key = "image" if mode == "txt2img" else "control_image"
    assert_close(guided, raw(raw_sd[mode], j, **{key: [lines(), depth()]}, controlnet_conditioning_scale=[1.0, 0.8],
                             control_guidance_start=[0.0, 0.1], control_guidance_end=[1.0, 0.9]))
    assert diff(guided, run(engine, job(mode))) > 5  # the layers steer
    assert guided.info["easel"]["features"]["controls"][1] == {"kind": "depth", "strength": 0.8, "start": 0.1,
                                                               "end": 0.9, "model": DEPTH}  # the one chosen


def test_strength_zero_is_the_other_alone_and_ranges_count(engine):
    only_lines = run(engine, job(controls=[Control("lineart", "a")]))
    assert diff(run(engine, job(controls=two(0.0))), only_lines) == 0
    both = run(engine, job(controls=two()))
    assert diff(both, only_lines) > 5
    assert diff(run(engine, job(controls=two(end_b=0.5))), both) > 0  # the depth layer stops halfway


def test_sdxl_union_equals_raw_union_pipeline(engine, assets):
    import diffusers

    union = diffusers.ControlNetUnionModel.from_pretrained(assets["union"], dtype=torch.float32)
    pipe = diffusers.StableDiffusionXLControlNetUnionPipeline.from_pretrained(assets["xl"], controlnet=[union, union],
                                                                              dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    j = job(model="tiny-sdxl", controls=two(0.8, 0.1, 0.9))
    guided = run(engine, j)
    assert_close(guided, raw(pipe, j, control_image=[lines(), depth()], control_mode=[3, 1],
                             controlnet_conditioning_scale=[1.0, 0.8], control_guidance_start=[0.0, 0.1],
                             control_guidance_end=[1.0, 0.9]))
    assert diff(guided, run(engine, job(model="tiny-sdxl"))) > 5
    img2img = run(engine, job("img2img", model="tiny-sdxl", controls=[Control("pose", "a")]))
    assert diff(img2img, run(engine, job("img2img", model="tiny-sdxl"))) > 5


def test_kinds_per_model_and_engine_errors(engine):
    kinds = {m.id: m.controls for m in engine.models()}
    assert kinds["tiny-sd"] == ["lineart", "depth"]
    assert "pose" in kinds["tiny-sdxl"] and "lineart" in kinds["tiny-sdxl"] and "stencil" not in kinds["tiny-sdxl"]
    with pytest.raises(EngineError) as err:
        run(engine, job(controls=[Control("pose", "a")]))
    assert err.value.code == "no_control_model" and err.value.field == "controls[0].kind"
    assert "pose" in str(err.value) and "lllyasviel/control_v11p_sd15_openpose" in str(err.value)
    with pytest.raises(EngineError) as err:
        run(engine, job(controls=[Control("lineart", "nope")]))
    assert err.value.field == "controls[0].image"
    with pytest.raises(EngineError) as err:
        run(engine, job(controls=[Control("lineart", "a", model="missing")]))
    assert err.value.field == "controls[0].model"
    stencil = GenerateRequest(job="j", prompt="p", model="tiny-sdxl", controls=[Control("stencil", "a", model=UNION)])
    with pytest.raises(EngineError) as err:  # a kind the union model has no control_mode for
        run(engine, job(model="tiny-sdxl", controls=stencil.controls))
    assert (err.value.code, err.value.field) == ("no_control_model", "controls[0].kind")
    assert "stencil" in str(err.value) and UNION in str(err.value)
    with pytest.raises(ProtocolError) as perr:  # the submit-time check is the engine's choice
        check_names(stencil, engine)
    assert (perr.value.code, perr.value.field, str(perr.value)) == (err.value.code, err.value.field, str(err.value))


def test_model_info_does_not_rescan_control_models(engine, monkeypatch):
    calls = []
    monkeypatch.setattr(engine._controls, "infos", lambda: calls.append(1) or {})
    for _ in range(3):
        assert engine.model_info("tiny-sd").id == "tiny-sd"
    assert calls == []


def test_one_load_per_controlnet_and_parameters_name_them(assets):
    loads = []

    def progress(p) -> None:
        if p.message and p.message.startswith("loading control model"):
            loads.append(p.message)

    with Engine([assets["sd"]], device="cpu", dtype="float32",
                control_models=[assets["lineart"], assets["depth"]]) as eng:
        for seed in (1, 2):
            out = eng.run(job(controls=two(), seeds=[seed]), progress, lambda: False)[0]
    assert sorted(loads) == [f"loading control model {DEPTH}", f"loading control model {LINEART}"]
    text = parameters_text(out.info["easel"]["features"], 2, SIZE, SIZE)
    assert f'ControlNet 0: "Module: lineart, Model: {LINEART}, ' in text
    assert f'ControlNet 1: "Module: depth, Model: {DEPTH}, ' in text


def test_models_folder_union_runs_in_union_mode_on_the_first_job(assets, tmp_path):
    import diffusers

    folder = build_tiny_controlnet_union(assets["xl"], tmp_path / "ControlNet" / UNION, seed=3)
    with Engine([assets["xl"]], device="cpu", dtype="float32",
                models_dir=[str(tmp_path), os.path.dirname(assets["xl"])]) as eng:
        assert eng.control_models() == [f"ControlNet/{UNION}"]
        j = job(model="tiny-sdxl", controls=[Control("lineart", "a")])
        guided = run(eng, j)
    union = diffusers.ControlNetUnionModel.from_pretrained(folder, dtype=torch.float32)
    pipe = diffusers.StableDiffusionXLControlNetUnionPipeline.from_pretrained(assets["xl"], controlnet=union,
                                                                              dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert_close(guided, raw(pipe, j, control_image=[lines()], control_mode=[3]))


def test_a_family_without_a_controlnet_for_the_kind_names_the_download(tiny_flux_path, assets):
    with Engine([str(tiny_flux_path)], device="cpu", dtype="float32", control_models=[assets["lineart"]]) as eng:
        with pytest.raises(EngineError) as err:  # the SD 1.5 line-art ControlNet does not fit FLUX.1
            run(eng, job(controls=[Control("lineart", "a")], negative_prompt=""))
    assert (err.value.field, err.value.code) == ("controls[0].kind", "no_control_model")
    assert "FLUX.1" in str(err.value) and "Shakker-Labs/FLUX.1-dev-ControlNet-Union-Pro" in str(err.value)


def test_hub_id_reads_no_config_from_the_working_directory(tmp_path, monkeypatch):
    from easel.server.engine.controlnet import parse_control_ref
    from easel.server.families import Family

    decoy = {"_class_name": "ControlNetUnionModel", "addition_embed_type": "text_time", "cross_attention_dim": 2048}
    (tmp_path / "config.json").write_text(json.dumps(decoy), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    ref = parse_control_ref("lllyasviel/control_v11p_sd15_scribble")
    assert (ref.info.kinds, ref.info.family, ref.info.union) == ({"scribble"}, Family.SD1, False)


def test_declaration_and_parse():
    assert parse_control("lineart=sketch.png@0.8@0-0.7") == {"kind": "lineart", "image": "sketch.png",
                                                             "strength": 0.8, "start": 0.0, "end": 0.7}
    for text in ("lineart", "lineart=a.png@x", "lineart=a.png@1@0.5"):
        with pytest.raises(ProtocolError) as err:
            parse_control(text)
        assert err.value.field == "controls" and "KIND=IMAGE" in str(err.value)
    cases = [({"kind": "sketchy", "image": "a"}, "controls[0].kind"),
             ({"kind": "depth", "image": "a", "start": 0.6, "end": 0.2}, "controls[0].end"),
             ({"kind": "depth"}, "controls[0].image")]
    for item, field in cases:
        with pytest.raises(ProtocolError) as err:
            GenerateRequest.from_message({"job": "j", "prompt": "p", "controls": [item]})
        assert err.value.field == field


def test_library_kinds_from_names():
    from easel.server.families import Family
    from easel.server.library.controls import name_info, name_kinds

    assert name_kinds("control_v11p_sd15_openpose") == {"pose"}
    assert name_kinds("control_v11p_sd15_normalbae") == {"normal"}
    assert name_kinds("control_v11p_sd15_seg") == {"segmentation"}
    assert name_kinds("sd-controlnet-hed") == {"softedge"}
    hub = name_info("xinsir/controlnet-union-sdxl-1.0")
    assert hub.union and hub.family == Family.SDXL and {"pose", "lineart", "tile"} <= hub.kinds


def rgba(img: Image.Image) -> WireImage:
    return WireImage.rgba(img.width, img.height, img.convert("RGBA").tobytes())


def test_server_and_cli(engine, tmp_path):
    from easel.cli import main

    lines().save(tmp_path / "a.png")
    depth().save(tmp_path / "b.png")
    with inprocess_server(engine) as (url, _):
        with Client(url, image_format="rgba") as client:
            models = {m["id"]: m for m in client.welcome["models"]}
            assert models["tiny-sd"]["controls"] == ["lineart", "depth"]
            request = GenerateRequest(job=new_job_id(), prompt="a red cat", steps=3, seed=7, guidance=7.5,
                                      controls=two(0.8, 0.1, 0.9))
            result = client.generate(request, attachments={"a": rgba(lines()), "b": rgba(depth())})
            served = Image.frombytes("RGBA", (SIZE, SIZE), result.images[0].image.data).convert("RGB")
            assert_close(served, run(engine, job(controls=two(0.8, 0.1, 0.9), seeds=[7])))
            for controls, sent, field in [([Control("pose", "a")], {"a": rgba(lines())}, "controls[0].kind"),
                                          ([Control("lineart", "a")], {}, "a")]:
                with pytest.raises((JobFailed, ProtocolError)) as err:
                    client.generate(GenerateRequest(job=new_job_id(), prompt="x", steps=2, controls=controls),
                                    attachments=sent)
                assert getattr(err.value, "field", None) == field or field in str(err.value)
        out = tmp_path / "out.png"
        code = main(["generate", "--url", url, "--prompt", "a red cat", "--steps", "3", "--seed", "7", "--guidance",
                     "7.5", "--quiet", "--control", f"lineart={tmp_path / 'a.png'}",
                     "--control", f"depth={tmp_path / 'b.png'}@0.8@0.1-0.9", "--out", str(out)])
        assert code == 0
        assert_close(Image.open(out).convert("RGB"), served)


def test_download_table_in_features_md_is_current():
    from pathlib import Path

    from easel.server.library.controls import TABLE, markdown_table

    text = (Path(__file__).parents[1] / "docs" / "features.md").read_text(encoding="utf-8")
    assert f"{TABLE[0]}\n{markdown_table()}{TABLE[1]}" in text, \
        "run python -m easel.server.library.controls --markdown docs/features.md"
