"""Transformer-only files of Chroma, Z-Image, Qwen-Image and FLUX.2 Klein in the model library (tiny models):
recognised from their headers (safetensors or GGUF, diffusers or original names), listed with their family and
what they need (the family's base folder: text encoders + VAE), served with a base folder found in the library
as 'FILE#config=FOLDER' would be, with the folder model's exact pixels; FLUX.2 Klein files (diffusers or BFL
names, safetensors or GGUF) load through diffusers' Flux2Transformer2DModel.from_single_file."""

from __future__ import annotations

import json
import os
import shutil

import diffusers
import numpy as np
import pytest
import torch

from easel.server.engine import Engine
from easel.server.library.detect import describe
from easel.server.library.header import TensorInfo
from easel.server.library.local import format_rows
from easel.server.library.scan import Library, describe_file
from helpers.engine_checks import arr, run
from helpers.engine_jobs import job
from helpers.tiny_gguf import write_gguf

torch.set_num_threads(1)
pytest.importorskip("gguf")
FAMILIES = {"chroma": "Chroma", "z-image": "Z-Image", "qwen-image": "Qwen-Image", "flux2-klein-4B": "FLUX.2 Klein"}
TEXT_WIDTH = {"chroma": 64, "z-image": 32, "qwen-image": 32, "flux2-klein-4B": 48}  # the tiny text encoders'


def _state(folder: str) -> dict[str, torch.Tensor]:
    cls = getattr(diffusers, diffusers.DiffusionPipeline.load_config(folder)["transformer"][1])
    return {k: v.contiguous() for k, v in cls.from_pretrained(folder, subfolder="transformer").state_dict().items()}


def _base_folder(folder: str, dest: os.PathLike) -> str:
    """A copy of ``folder`` whose transformer/ keeps only its config.json (what a base folder needs)."""
    out = shutil.copytree(folder, dest)
    for name in os.listdir(out / "transformer"):
        if name != "config.json":
            os.remove(out / "transformer" / name)
    return os.fspath(out)


@pytest.fixture(scope="module")
def files(tiny_2026_paths, tmp_path_factory) -> dict[str, dict[str, str]]:
    """Per family: its tiny transformer as safetensors and as GGUF (F32) under ``files/``, and a base folder."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("files2026")
    out = {}
    for family in FAMILIES:
        state = _state(tiny_2026_paths[family])
        save_file(state, root / f"{family}-tiny.safetensors")
        out[family] = {"safetensors": os.fspath(root / f"{family}-tiny.safetensors"),
                       "gguf": write_gguf(state, root / f"{family}-tiny-F32.gguf"),
                       "base": _base_folder(tiny_2026_paths[family], root / "bases" / f"{family}-encoders")}
    return out


def test_transformer_files_are_recognised_from_their_headers(files):
    for family, label in FAMILIES.items():
        plain, gguf = (describe_file(files[family][kind], 0.0) for kind in ("safetensors", "gguf"))
        for d in (plain, gguf):
            assert (d.kind, d.family, d.transformer, d.problem) == ("checkpoint", family.removesuffix("-4B"), True,
                                                                     None)
            assert d.context == TEXT_WIDTH[family]
        assert (plain.label, gguf.label) == (f"{label} transformer", f"{label} transformer (GGUF F32)")


@pytest.mark.parametrize(("names", "family"), [
    (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "single_stream_modulation.lin.weight",
      "double_stream_modulation_img.lin.weight", "txt_in.weight", "img_in.weight"], "flux2-klein"),  # BFL's Klein
    (["model.diffusion_model." + n for n in ("distilled_guidance_layer.in_proj.bias", "txt_in.weight",
                                              "double_blocks.0.img_attn.qkv.weight")], "chroma"),  # ComfyUI's Chroma
    (["layers.0.adaLN_modulation.0.weight", "layers.0.attention.qkv.weight", "cap_embedder.1.weight",
      "x_embedder.weight", "noise_refiner.0.attention.qkv.weight"], "z-image"),  # Tongyi's Z-Image
    (["transformer_blocks.0.img_mod.1.weight", "transformer_blocks.0.txt_mod.1.weight", "txt_norm.weight",
      "txt_in.weight", "img_in.weight"], "qwen-image"),
    (["double_blocks.0.img_mod.lin.weight", "single_blocks.0.modulation.lin.weight", "txt_in.weight",
      "img_in.weight"], "flux"),
])
def test_original_layouts(names, family):
    d = describe({n: TensorInfo("BF16", (3072, 7680) if "txt_in" in n else (64, 64)) for n in names})
    assert (d.kind, d.family, d.transformer, d.problem) == ("checkpoint", family, True, None)
    assert d.context == (7680 if any("txt_in" in n for n in names) else 64)


def test_relatives_easel_does_not_serve_are_named():
    dev = {n: TensorInfo("BF16", (64, 64)) for n in ("single_stream_modulation.lin.weight", "guidance_in.in_layer.weight",
                                                     "double_stream_modulation_img.lin.weight")}
    assert describe(dev).problem == ("a FLUX.2 [dev] transformer (it embeds guidance; FLUX.2 Klein's do not); Easel "
                                     "serves transformer files of FLUX.1, Chroma, Z-Image, Qwen-Image and FLUX.2 Klein")


def test_the_library_says_what_a_transformer_needs_then_serves_it_with_a_base_folder(files, tmp_path):
    for family in FAMILIES:
        shutil.copy(files[family]["gguf"], tmp_path)
    entries = {e.id: e for e in Library([tmp_path]).scan()}
    for family, label in FAMILIES.items():
        entry = entries[f"{family}-tiny-F32"]
        assert entry.kind == "checkpoint" and entry.config is None
        assert entry.problem == (f"a {label} transformer (GGUF F32) needs the text encoders and VAE of a {label} base "
                                 f"folder: put a diffusers folder of the same model beside it, named {family}-tiny-F32/ "
                                 "(its transformer/ needs only config.json), or anywhere in the models folders")
    # base folders anywhere in the library; a Klein one for another text encoder (the 9B's) is not this file's
    other = shutil.copytree(files["flux2-klein-4B"]["base"], tmp_path / "bases" / "a-klein-9B-encoders")
    config = json.loads((other / "transformer" / "config.json").read_text())
    (other / "transformer" / "config.json").write_text(json.dumps({**config, "joint_attention_dim": 96}))
    for family in FAMILIES:
        shutil.copytree(files[family]["base"], tmp_path / "bases" / f"{family}-encoders")
    scanned = Library([tmp_path]).scan()
    entries = {e.id: e for e in scanned}
    for family, label in FAMILIES.items():
        entry, base = entries[f"{family}-tiny-F32"], entries[f"bases/{family}-encoders"]
        assert (entry.kind, entry.problem, entry.config) == ("checkpoint", None, base.path)
        assert (base.kind, base.desc.label, base.problem) == ("base", f"{label} base folder", None)
    assert entries["bases/a-klein-9B-encoders"].desc.context == 96
    listing = format_rows([e.to_dict() for e in scanned])
    assert f"{entries['chroma-tiny-F32'].path}, served with the text encoders and VAE of {tmp_path}/bases/chroma-" \
           "encoders" in listing


def test_served_files_give_the_folder_models_pixels(files, tiny_2026_paths, tmp_path):
    """Each family's GGUF F32 file, found in the library with a base folder, runs as its folder does."""
    for family in FAMILIES:
        shutil.copy(files[family]["gguf"], tmp_path)
        shutil.copytree(files[family]["base"], tmp_path / "bases" / f"{family}-encoders")
    folders = [tiny_2026_paths[f] for f in FAMILIES]
    with Engine(folders, models_dir=tmp_path, device="cpu", dtype="float32") as eng:
        for family, folder in zip(FAMILIES, folders):
            file_id = f"{family}-tiny-F32"
            assert eng.model_info(file_id).family == family.removesuffix("-4B")
            assert eng.model_info(file_id).source == "single_file"
            settings = {"seeds": [2], "steps": 2, "guidance": 2.0, "negative_prompt": "" if "flux" in family else "ugly"}
            (reference,) = run(eng, job(model=os.path.basename(folder), **settings))
            (served,) = run(eng, job(model=file_id, **settings))
            assert np.array_equal(arr(served), arr(reference)), family


def _bfl_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Flux2Transformer2DModel's weights under BFL's original names (as FLUX.2 Klein files are published):
    diffusers' converter run backwards (fused q/k/v, ``.scale`` norms, shift before scale in the final norm)."""
    renames = [("x_embedder", "img_in"), ("context_embedder", "txt_in"), ("proj_out", "final_layer.linear"),
               ("time_guidance_embed.timestep_embedder.linear_1", "time_in.in_layer"),
               ("time_guidance_embed.timestep_embedder.linear_2", "time_in.out_layer"),
               ("modulation_img.linear", "modulation_img.lin"), ("modulation_txt.linear", "modulation_txt.lin"),
               ("single_stream_modulation.linear", "single_stream_modulation.lin")]
    block = {"attn.norm_q.weight": "img_attn.norm.query_norm.scale", "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
             "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
             "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale", "attn.to_out.0.weight": "img_attn.proj.weight",
             "attn.to_add_out.weight": "txt_attn.proj.weight", "ff.linear_in.weight": "img_mlp.0.weight",
             "ff.linear_out.weight": "img_mlp.2.weight", "ff_context.linear_in.weight": "txt_mlp.0.weight",
             "ff_context.linear_out.weight": "txt_mlp.2.weight"}
    single = {"attn.to_qkv_mlp_proj.weight": "linear1.weight", "attn.to_out.weight": "linear2.weight",
              "attn.norm_q.weight": "norm.query_norm.scale", "attn.norm_k.weight": "norm.key_norm.scale"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "norm_out.linear.weight":
            scale, shift = value.chunk(2)
            out["final_layer.adaLN_modulation.1.weight"] = torch.cat([shift, scale])
        elif key.startswith("transformer_blocks."):
            n, rest = key.split(".", 2)[1:]
            if rest in block:
                out[f"double_blocks.{n}.{block[rest]}"] = value
            elif rest.startswith(("attn.to_q.", "attn.add_q_proj.")):
                parts = ("to_q", "to_k", "to_v") if "to_q" in rest else ("add_q_proj", "add_k_proj", "add_v_proj")
                fused = torch.cat([state[f"transformer_blocks.{n}.attn.{p}.weight"] for p in parts])
                out[f"double_blocks.{n}.{'img' if 'to_q' in rest else 'txt'}_attn.qkv.weight"] = fused
        elif key.startswith("single_transformer_blocks."):
            n, rest = key.split(".", 2)[1:]
            out[f"single_blocks.{n}.{single[rest]}"] = value
        else:
            for old, new in renames:
                key = key.replace(old, new)
            out[key] = value
    return out


def test_klein_files_load_through_diffusers_single_file_path(files, tiny_2026_paths, tmp_path):
    """FLUX.2 Klein as 'FILE#config=FOLDER': a diffusers-names safetensors file, BFL's names (converted by
    diffusers on load) and a GGUF Q8_0 file (kept quantised) next to the folder model."""
    from safetensors.torch import save_file

    folder, base = tiny_2026_paths["flux2-klein-4B"], files["flux2-klein-4B"]["base"]
    state = _state(folder)
    bfl = tmp_path / "klein-bfl.safetensors"
    save_file(_bfl_names(state), bfl)
    q8 = write_gguf(_bfl_names(state), tmp_path / "klein-bfl-Q8_0.gguf", quantise=True)
    assert describe_file(os.fspath(bfl), 0.0).family == describe_file(q8, 0.0).family == "flux2-klein"
    refs = [f"{files['flux2-klein-4B']['safetensors']}#config={base}", f"{bfl}#config={base}", f"{q8}#config={base}"]
    with Engine([folder, *refs], device="cpu", dtype="float32") as eng:
        whole, plain, original, quantised = (m.id for m in eng.models())
        settings = {"seeds": [2], "steps": 2, "negative_prompt": ""}
        (reference,) = run(eng, job(model=whole, **settings))
        (same,) = run(eng, job(model=plain, **settings))
        (converted,) = run(eng, job(model=original, **settings))
        (close,) = run(eng, job(model=quantised, **settings))
        weight = eng.pipeline(quantised).transformer.single_transformer_blocks[0].attn.to_qkv_mlp_proj.weight
        assert type(weight).__name__ == "GGUFParameter"  # kept quantised
    assert np.array_equal(arr(same), arr(reference)) and np.array_equal(arr(converted), arr(reference))
    diff = np.abs(arr(close) - arr(reference))
    assert diff.max() <= 3  # Q8_0: int8 weights with one fp16 scale per 32 values (test_gguf_files.py)


def test_a_file_named_at_start_up_takes_its_base_folder_from_the_library(files, tiny_2026_paths, tmp_path):
    """``easel serve --model FILE.gguf --models-dir ROOT``: no '#config=', no sibling folder; the library's
    base folder of its family gives the text encoders and VAE (the folder model's pixels); without a models
    folder the error still says what to add."""
    from easel.server.engine import EngineError

    family = "z-image"
    gguf = shutil.copy(files[family]["gguf"], tmp_path / "z-image-named.gguf")
    root = tmp_path / "models"
    shutil.copytree(files[family]["base"], root / "z-image-encoders")
    settings = {"seeds": [2], "steps": 2, "guidance": 2.0, "negative_prompt": "ugly"}
    with Engine([gguf], models_dir=root, device="cpu", dtype="float32") as eng:
        assert eng.model_info("z-image-named").family == family
        (served,) = run(eng, job(model="z-image-named", **settings))
    with Engine([tiny_2026_paths[family]], device="cpu", dtype="float32") as eng:
        (reference,) = run(eng, job(model=os.path.basename(tiny_2026_paths[family]), **settings))
    assert np.array_equal(arr(served), arr(reference))
    with pytest.raises(EngineError, match="config="):
        with Engine([gguf], device="cpu", dtype="float32") as eng:
            run(eng, job(model="z-image-named", **settings))
