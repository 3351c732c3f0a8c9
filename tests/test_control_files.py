"""ControlNet single files in the painter's models folders (A1111 ``models/ControlNet``, ComfyUI
``models/controlnet``) and named with ``--control-model FILE``: original and diffusers layouts, a prefixed pickle,
xinsir's ControlNet Union; listed with family and kinds, each generating exactly what the diffusers folder of the
same weights does; bad files listed with a problem that says the fix; the real architectures recognised from
meta-device state dicts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.protocol import Control
from easel.server.engine import Engine, EngineError
from easel.server.engine.controlnet import parse_control_ref
from easel.server.families import Family
from easel.server.library import Library
from helpers.cli_runs import easel
from helpers.engine_jobs import SIZE, job
from helpers.library_fixtures import write_safetensors
from helpers.tiny_models import build_tiny_controlnet, build_tiny_controlnet_union
from helpers.tiny_single_file import write_control_file

torch.set_num_threads(1)  # 2 shared cores
FILES = {  # file -> (the folder of its weights, original layout, key prefix, the kind a layer asks for, model)
    "control_v11p_sd15_lineart.safetensors": ("lineart", True, "", "lineart", "tiny-sd"),
    "control_v11f1p_sd15_depth.pth": ("depth", True, "control_model.", "depth", "tiny-sd"),
    "controlnet_xl_canny_original.safetensors": ("canny_xl", True, "", "canny", "tiny-sdxl"),
    "diffusers_xl_canny_full.safetensors": ("canny_xl", False, "", "canny", "tiny-sdxl"),
    "controlnet-union-sdxl-promax.safetensors": ("union", False, "", "depth", "tiny-sdxl"),
}
LAYOUTS = {"a1111": ("Stable-diffusion", "ControlNet", ""), "comfyui": ("checkpoints", "controlnet", ".config")}


@pytest.fixture(scope="module")
def folders(tiny_sd_path, tiny_sdxl_path, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("control_folders")
    return {"sd": str(tiny_sd_path), "xl": str(tiny_sdxl_path),
            "lineart": build_tiny_controlnet(tiny_sd_path, root / "lineart", seed=1),
            "depth": build_tiny_controlnet(tiny_sd_path, root / "depth", seed=2),
            "canny_xl": build_tiny_controlnet(tiny_sdxl_path, root / "canny_xl", seed=3),
            "union": build_tiny_controlnet_union(tiny_sdxl_path, root / "union", seed=4)}


def write_file(weights: str, where: Path, name: str, original: bool = True, prefix: str = "",
               config_suffix: str | None = "") -> Path:
    """The ControlNet folder ``weights`` as the file ``where/name``, with its config folder beside it, named
    like the file plus ``config_suffix`` (None: without one)."""
    where.mkdir(parents=True, exist_ok=True)
    out = Path(write_control_file(weights, where / name, original, prefix))
    if config_suffix is not None:
        config = where / (out.name.rsplit(".", 1)[0] + config_suffix)
        config.mkdir()
        shutil.copy(os.path.join(weights, "config.json"), config / "config.json")
    return out


def write_listed(folders: dict[str, str], name: str, where: Path, config_suffix: str | None = "") -> Path:
    """The file ``name`` of ``FILES`` in ``where`` (``write_file``)."""
    source, original, prefix, _, _ = FILES[name]
    return write_file(folders[source], where, name, original, prefix, config_suffix)


def models_folder(root: Path, layout: str, folders: dict[str, str]) -> Path:
    """A painter's models folder in ``layout`` holding every file of ``FILES`` with its config folder."""
    checkpoints, controlnets, suffix = LAYOUTS[layout]
    (root / "models" / checkpoints).mkdir(parents=True)
    for name in FILES:
        write_listed(folders, name, root / "models" / controlnets, suffix)
    return root


def lines() -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE))
    img.paste((255, 255, 255), (10, 10, 30, 54))
    return img


def guided(engine: Engine, model: str, kind: str, control: str | None) -> np.ndarray:
    j = job(model=model, controls=[Control(kind, "a", model=control)], attached={"a": lines()})
    return np.asarray(engine.run(j, lambda p: None, lambda: False)[0], np.int16)


@pytest.fixture(scope="module")
def by_folder(folders) -> dict[str, np.ndarray]:
    """Each file's generation through the diffusers folder of its weights (and one with no control layer)."""
    nets = [folders[k] for k in ("lineart", "depth", "canny_xl", "union")]
    with Engine([folders["sd"], folders["xl"]], device="cpu", dtype="float32", control_models=nets) as eng:
        out = {name: guided(eng, model, kind, FILES[name][0]) for name, (_, _, _, kind, model) in FILES.items()}
        out["plain"] = np.asarray(eng.run(job(model="tiny-sdxl"), lambda p: None, lambda: False)[0], np.int16)
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_models_folder_files_are_listed_and_equal_their_folders(layout, folders, by_folder, tmp_path):
    root = models_folder(tmp_path, layout, folders)
    entries = {e.id: e for e in Library([root]).scan() if e.kind == "controlnet"}
    ids = [name.rsplit(".", 1)[0] for name in FILES]
    assert sorted(entries) == sorted(ids)  # the config folders beside them are no entries of their own
    for entry in entries.values():
        assert entry.problem is None and not entry.folder, (entry.id, entry.problem)
        assert entry.desc.family == (Family.SDXL if "xl" in entry.id else None), entry.id  # tiny SD: width 32
    assert entries["controlnet-union-sdxl-promax"].desc.control_types == 8
    with Engine([folders["sd"], folders["xl"]], device="cpu", dtype="float32", models_dir=[str(root)]) as eng:
        assert sorted(eng.control_models()) == sorted(ids)
        kinds = {m.id: m.controls for m in eng.models()}
        assert kinds["tiny-sd"] == ["lineart", "depth"]
        assert {"canny", "pose", "tile", "inpaint"} <= set(kinds["tiny-sdxl"])  # promax: all 8 control types
        for name, (_, _, _, kind, model) in FILES.items():
            image = guided(eng, model, kind, name.rsplit(".", 1)[0])
            assert np.array_equal(image, by_folder[name]), name
    assert np.abs(by_folder["diffusers_xl_canny_full.safetensors"] - by_folder["plain"]).max() > 5  # it steers


def test_bad_files_are_listed_with_their_problem(folders, tmp_path):
    cn = tmp_path / "models" / "ControlNet"
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    write_listed(folders, "control_v11p_sd15_lineart.safetensors", cn, config_suffix=None)  # tiny: no shipped config
    misfit = write_listed(folders, "diffusers_xl_canny_full.safetensors", cn, config_suffix=None)
    shutil.copytree(folders["lineart"], cn / "diffusers_xl_canny_full", ignore=shutil.ignore_patterns("*.safetensors"))
    write_safetensors(cn / "control-lora-canny-rank128.safetensors",
                      {"input_hint_block.0.weight": (16, 3, 3, 3), "lora_controlnet": (1,)})
    write_safetensors(cn / "flux-canny-controlnet-v3.safetensors",  # XLabs' FLUX.1 ControlNets
                      {"input_hint_block.0.weight": (16, 3, 3, 3), "double_blocks.0.img_attn.qkv.weight": (12, 4)})
    entries = {e.id: e for e in Library([tmp_path]).scan()}
    flux = entries["flux-canny-controlnet-v3"]
    assert (flux.kind, flux.desc.family) == ("controlnet", Family.FLUX)
    assert flux.problem == ("a FLUX.1 ControlNet single file; Easel loads FLUX.1 ControlNets from their diffusers "
                            "folders (config.json + weights)")
    assert "put its ControlNet config folder (its config.json) beside it, named control_v11p_sd15_lineart/" in \
        entries["control_v11p_sd15_lineart"].problem
    assert "cross-attention width 32" in entries["control_v11p_sd15_lineart"].problem
    assert entries["control-lora-canny-rank128"].problem == "a Control-LoRA, which Easel does not use"
    assert entries["diffusers_xl_canny_full"].problem is None  # a config beside it: its fit shows on loading
    with Engine([folders["sd"], folders["xl"]], device="cpu", dtype="float32", models_dir=[str(tmp_path)]) as eng:
        assert eng.control_models() == ["diffusers_xl_canny_full"]
        with pytest.raises(EngineError) as err:
            guided(eng, "tiny-sd", "lineart", "control_v11p_sd15_lineart")
        assert (err.value.field, err.value.code) == ("controls[0].model", "model_load_failed")
        assert "config folder" in str(err.value)
        with pytest.raises(EngineError) as err:
            guided(eng, "tiny-sdxl", "canny", "diffusers_xl_canny_full")
        assert (err.value.field, err.value.code) == ("control_model", "model_load_failed")
        assert "do not fit the config" in str(err.value) and str(misfit.with_suffix("")) in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_half_precision_files_load_in_the_engine_dtype(folders, tmp_path, dtype):
    from diffusers import ControlNetModel

    from easel.server.engine.control_file import load_control_file

    half = ControlNetModel.from_pretrained(folders["lineart"], torch_dtype=torch.float16)
    half.save_pretrained(tmp_path / "half")
    file = write_file(str(tmp_path / "half"), tmp_path / "cn", "control_v11p_sd15_lineart_fp16.safetensors")
    model = load_control_file(str(file), str(file.with_suffix("")), dtype)
    want = {k: v.to(dtype) for k, v in half.state_dict().items()}
    got = model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_control_model_flag_takes_a_file(folders, by_folder, tmp_path):
    name = "controlnet_xl_canny_original.safetensors"
    file = write_listed(folders, name, tmp_path / "cn", config_suffix=".config")
    ref = parse_control_ref(str(file))
    assert (ref.id, ref.source, ref.config) == ("controlnet_xl_canny_original", "file", str(file.with_suffix(".config")))
    assert (ref.info.kinds, ref.info.family, ref.info.union) == ({"canny"}, Family.SDXL, False)
    with Engine([folders["xl"]], device="cpu", dtype="float32", control_models=[str(file)]) as eng:
        assert eng.control_models() == ["controlnet_xl_canny_original"]
        assert np.array_equal(guided(eng, "tiny-sdxl", "canny", None), by_folder[name])
    bare = write_listed(folders, "control_v11p_sd15_lineart.safetensors", tmp_path / "bare", config_suffix=None)
    with pytest.raises(EngineError) as err:
        parse_control_ref(str(bare))
    assert err.value.field == "control_model" and "named control_v11p_sd15_lineart/" in str(err.value)
    lora = write_safetensors(tmp_path / "ink.safetensors", {"lora_unet_x.lora_down.weight": (4, 32)})
    with pytest.raises(EngineError) as err:
        parse_control_ref(str(lora))
    assert err.value.field == "control_model" and "LoRA, not a ControlNet" in str(err.value)
    r = easel("serve", "--model", folders["sd"], "--port", "0", "--control-model", str(bare))
    lines_out = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(lines_out) == 1, r.stderr
    assert "control_v11p_sd15_lineart.safetensors" in lines_out[0] and "config folder" in lines_out[0]


@pytest.mark.parametrize("arch, original, prefix, changes, types", [
    ("controlnet-sd1", True, "", {}, None),  # control_v11p_sd15_*.pth, *_fp16.safetensors
    ("controlnet-sd1", True, "control_model.", {}, None),  # taken out of a v1.0 full model
    ("controlnet-sd1", False, "", {}, None),  # a diffusion_pytorch_model.safetensors, renamed
    ("controlnet-sdxl", False, "", {}, None),  # diffusers_xl_canny_full.safetensors
    ("controlnet-sdxl", True, "", {}, None),
    ("controlnet-union-sdxl", False, "", {}, 8),  # xinsir's promax weights
    ("controlnet-union-sdxl", False, "", {"num_control_type": 6}, 6),  # xinsir's first weights
])
def test_real_controlnets_are_recognised_and_fit_the_shipped_configs(arch, original, prefix, changes, types):
    from easel.server.engine.control_file import check_tensors, file_config, to_diffusers
    from easel.server.library.configs import CONTROL_CONFIGS, spec
    from easel.server.library.detect import describe
    from helpers.real_archs import control_modules, controlnet
    from helpers.tiny_single_file import controlnet_to_ldm

    d = describe(controlnet(arch, original, prefix, **changes))
    family = CONTROL_CONFIGS[arch]
    assert (d.kind, d.family, d.arch, d.context, d.control_types, d.problem) == \
        ("controlnet", family, arch, 2048 if family == Family.SDXL else 768, types, None)
    if not changes:
        with open(os.path.join(file_config(d, None), "config.json"), encoding="utf-8") as f:
            assert json.load(f) == spec(arch)["controlnet"]  # no config beside it: the shipped one
    if original and not prefix:  # diffusers' converter (and the text-time embedding it leaves out) gives them all
        want = control_modules(arch, **changes)
        check_tensors(want, to_diffusers(controlnet_to_ldm(want, spec(arch)["controlnet"]), spec(arch)["controlnet"]),
                      arch)


def test_real_controlnets_of_other_sizes_ask_for_their_config():
    from easel.server.library.detect import describe
    from easel.server.library.scan import with_config
    from helpers.real_archs import controlnet

    sd2 = describe(controlnet("controlnet-sd1", cross_attention_dim=1024, use_linear_projection=True,
                              attention_head_dim=[5, 10, 20, 20]))  # thibaud's control_sd21_*
    assert (sd2.family, sd2.arch, sd2.problem) == (Family.SD2, None, None)
    assert with_config(sd2, None, "/m/ControlNet/control_sd21_canny.safetensors").problem == (
        "its sizes match no architecture Easel ships a config for (cross-attention width 1024); put its ControlNet "
        "config folder (its config.json) beside it, named control_sd21_canny/")
    mid = describe(controlnet("controlnet-sdxl", False, transformer_layers_per_block=[1, 1, 1]))  # a "-mid" variant
    assert (mid.family, mid.arch) == (Family.SDXL, None)
