"""The models-folder scanner on real files: each layout, broken files, files being copied, pickles."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import time

import pytest
import torch

from easel.server.library import Library
from easel.server.library.header import HeaderError, Incomplete, NeedsCode, read_header, read_pickle_index
from helpers.library_fixtures import LAYOUTS, build_layout, make_assets, write_safetensors
from helpers.tiny_models import config_only_copy


@pytest.fixture(scope="session")
def assets(tiny_sd_path, tiny_sdxl_path, tmp_path_factory) -> dict[str, str]:
    return make_assets(tiny_sd_path, tiny_sdxl_path, tmp_path_factory.mktemp("library_assets"))


WANT = {  # id -> (kind, family, inpaint, problem words)
    "dreamshaper_tiny": ("checkpoint", "sd1", False, None), "sdxl/juggernaut_xl": ("checkpoint", "sdxl", False, None),
    "inpaint_tiny": ("checkpoint", "sd1", True, None), "sd-folder": ("checkpoint", "sd1", False, None),
    "xl-folder": ("checkpoint", "sdxl", False, None), "ink.safetensors": ("lora", None, False, None),
    "ink_xl.safetensors": ("lora", "sdxl", False, None), "scribble": ("controlnet", None, False, None),
    "tiny-vae": ("vae", None, False, None), "truncated": (None, None, False, "truncated"),
    "copying": (None, None, False, "still being copied"), "corrupt": (None, None, False, "corrupt"),
    "flux_like": ("checkpoint", None, False, "FLUX.1"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_lists_everything(layout, assets, tmp_path):
    build_layout(tmp_path, layout, assets)
    entries = {e.id: e for e in Library([tmp_path]).scan()}
    assert set(entries) == set(WANT), layout
    for entry_id, (kind, family, inpaint, problem) in WANT.items():
        e = entries[entry_id]
        if kind:
            assert e.kind == kind, entry_id
        assert (e.desc.family, e.desc.inpaint) == (family, inpaint), entry_id
        assert (problem is None) == (e.problem is None) and (problem or "") in (e.problem or ""), (entry_id, e.problem)
    assert entries["dreamshaper_tiny"].desc.native == 64  # from its config folder (a real SD 1.x says 512)
    assert entries["dreamshaper_tiny"].config == str(entries["dreamshaper_tiny"].path)[:-len(".safetensors")]
    assert entries["dreamshaper_tiny"].name == "dreamshaper tiny"
    assert entries["ink.safetensors"].desc.context == 32 and entries["ink_xl.safetensors"].desc.context == 80


def test_install_folder_searches_only_models(assets, tmp_path):
    build_layout(tmp_path, "above", assets)
    assert not any("venv" in e.path for e in Library([tmp_path]).scan())


def test_changes_show_up_and_ids_stay(assets, tmp_path):
    build_layout(tmp_path, "comfyui", assets)
    lib = Library([tmp_path], min_interval=0.0)
    first = [(e.id, e.path) for e in lib.entries()]
    assert [(e.id, e.path) for e in lib.entries()] == first
    os.remove(tmp_path / "checkpoints" / "dreamshaper_tiny.safetensors")
    assert "config-only" in {e.id: e for e in lib.entries()}["dreamshaper_tiny"].problem  # its config folder is left
    shutil.rmtree(tmp_path / "checkpoints" / "dreamshaper_tiny")
    extra = tmp_path / "checkpoints" / "new_model.safetensors"
    extra.write_bytes(open(assets["sd_file"], "rb").read())
    ids = {e.id for e in lib.entries()}
    assert "dreamshaper_tiny" not in ids and "new_model" in ids


def test_file_being_copied_becomes_a_model_when_complete(assets, tmp_path):
    data = open(assets["sd_file"], "rb").read()
    target = tmp_path / "model.safetensors"
    config_only_copy(assets["sd"], tmp_path / "model")
    lib = Library([tmp_path], min_interval=0.0)
    with open(target, "wb") as f:
        f.write(data[:10])  # not even the header yet
        f.flush()
        assert "still being copied" in lib.entries()[0].problem
        f.write(data[10: len(data) // 2])
        f.flush()
        assert "still being copied" in lib.entries()[0].problem
        f.write(data[len(data) // 2:])
    (entry,) = lib.entries()
    assert entry.problem is None and entry.kind == "checkpoint"


def test_header_reader_errors(tmp_path):
    path = write_safetensors(tmp_path / "ok.safetensors", {"a": (2, 3), "b": (4,)})
    header = read_header(str(path))
    assert {k: v.shape for k, v in header.tensors.items()} == {"a": (2, 3), "b": (4,)}
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-4])
    with pytest.raises(Incomplete) as err:
        read_header(str(cut))
    assert err.value.want == len(data) and err.value.have == len(data) - 4
    (tmp_path / "short.safetensors").write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(Incomplete):
        read_header(str(tmp_path / "short.safetensors"))
    (tmp_path / "zero.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(HeaderError, match="not a safetensors file"):
        read_header(str(tmp_path / "zero.safetensors"))
    bad = b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}'  # 4 floats need 16 bytes
    (tmp_path / "lies.safetensors").write_bytes(struct.pack("<Q", len(bad)) + bad + b"\0" * 8)
    with pytest.raises(HeaderError, match="corrupt"):
        read_header(str(tmp_path / "lies.safetensors"))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_read_only_with_weights_only(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)},
                "global_step": 10}, good)
    index = read_pickle_index(str(good))
    assert index.tensors["model.diffusion_model.input_blocks.0.0.weight"].shape == (8, 4, 3, 3)
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "ran"
    _Evil.marker = marker
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": _Evil()}, evil)
    with pytest.raises(NeedsCode) as err:
        read_pickle_index(str(evil))
    assert not marker.exists()
    assert "needs code" in str(err.value) and "safetensors" in str(err.value) and "system" in str(err.value)
    (entry,) = [e for e in Library([tmp_path]).scan() if e.path.endswith("evil.ckpt")]
    assert "needs code" in entry.problem and not marker.exists()
    old = tmp_path / "old.ckpt"
    torch.save({"x": torch.zeros(1)}, old, _use_new_zipfile_serialization=False)
    with pytest.raises(HeaderError, match="old-style"):
        read_pickle_index(str(old))
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(Incomplete):
        read_pickle_index(str(cut))


def test_other_tools_files_are_skipped_in_flat_folders(tmp_path):
    write_safetensors(tmp_path / "embedding.safetensors", {"emb_params": (4, 8)})
    for folder in ("annotators", "preprocessors"):  # the From image preprocessors' models (easel.server.preprocess)
        (tmp_path / folder / "dpt").mkdir(parents=True)
        write_safetensors(tmp_path / folder / "dpt" / "model.safetensors", {"dpt.embeddings.cls_token": (1, 1, 8)})
    assert Library([tmp_path]).scan() == []


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Library([tmp_path / "nope"])


def test_old_truncated_file_is_not_still_copying(assets, tmp_path):
    target = tmp_path / "half.safetensors"
    target.write_bytes(open(assets["sd_file"], "rb").read()[:1000])
    assert "still being copied" in Library([tmp_path]).scan()[0].problem
    old = time.time() - 3600
    os.utime(target, (old, old))
    assert Library([tmp_path]).scan()[0].problem.startswith("truncated")


def test_pickle_module_is_not_used_for_safetensors(tmp_path, monkeypatch):
    """Describing safetensors never unpickles anything."""
    write_safetensors(tmp_path / "x.safetensors", {"a": (1,)})
    monkeypatch.setattr(pickle, "loads", None)
    assert Library([tmp_path]).scan()[0].kind == "unknown"
