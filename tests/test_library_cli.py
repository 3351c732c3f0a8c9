"""The model library on the command line: the config file of ``easel serve`` (flags win), ``--print-config``,
``easel models --local`` and ``easel download`` against a local stand-in for the hub (real client)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from easel.cli import build_parser, main
from easel.cli.library import apply_settings
from easel.client.connection import Client
from easel.server.settings import SettingsError, read_file, tomllib
from helpers.fake_hub import FakeHub
from helpers.library_fixtures import build_layout, make_assets
from helpers.server_harness import REPO, running_server


@pytest.fixture(scope="session")
def assets(tiny_sd_path, tiny_sdxl_path, tmp_path_factory) -> dict[str, str]:
    return make_assets(tiny_sd_path, tiny_sdxl_path, tmp_path_factory.mktemp("library_assets"))


def serve_args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_config_file_then_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("EASEL_TOKEN", raising=False)
    (tmp_path / "models").mkdir()
    config = tmp_path / "easel.toml"
    config.write_text('models_dirs = ["models", "~/elsewhere"]\ndevice = "cpu"\nport = 9000\nmax_loaded = 1\n'
                      'token = "from-file"\npreload = false\n[serve]\nkeep_days = 3\n')
    args = serve_args("--config", str(config), "--port", "7000", "--model", "easel-demo")
    assert apply_settings(args) is None
    assert args.models_dirs == [str(tmp_path / "models"), os.path.expanduser("~/elsewhere")]  # relative to the file
    assert (args.device, args.port, args.max_loaded, args.token, args.preload, args.keep_days) == \
        ("cpu", 7000, 1, "from-file", False, 3.0)
    assert args.models == ["easel-demo"] and args.settings.models == ["easel-demo"]
    plain = serve_args("--config", str(config), "--device", "auto")  # a flag equal to the default still wins
    apply_settings(plain)
    assert plain.device == "auto"


def test_token_from_the_environment_beats_the_file(tmp_path, monkeypatch):
    config = tmp_path / "easel.toml"
    config.write_text('token = "from-file"\n')
    monkeypatch.setenv("EASEL_TOKEN", "from-env")
    args = serve_args("--config", str(config))
    apply_settings(args)
    assert args.token == "from-env"


def test_default_config_location(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    monkeypatch.setenv("EASEL_CONFIG", str(config))
    args = serve_args()
    apply_settings(args)
    assert args.device == "auto"  # no file: defaults
    config.write_text('dtype = "float32"\n')
    args = serve_args()
    apply_settings(args)
    assert args.dtype == "float32"


@pytest.mark.parametrize("text, words", [
    ('devise = "cpu"', "did you mean 'device'"),
    ('port = "80"', "whole number"),
    ('device = "tpu"', "use one of auto, cpu, cuda, mps"),
    ('models = "a", "b"', "not valid TOML"),
    ('models_dirs = [1]', "list of strings"),
    ('attention_slicing = "yes"', "true or false"),
])
def test_bad_config_files_name_the_key(tmp_path, text, words):
    config = tmp_path / "bad.toml"
    config.write_text(text + "\n")
    with pytest.raises(SettingsError) as err:
        read_file(config)
    assert words in str(err.value) and str(config) in str(err.value)
    assert main(["serve", "--config", str(config)]) == 2


def test_print_config_is_a_config_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EASEL_TOKEN", raising=False)
    config = tmp_path / "easel.toml"
    config.write_text('device = "cpu"\ntoken = "secret"\nallow_origins = ["http://x"]\n')
    assert main(["serve", "--config", str(config), "--port", "1234", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "secret" not in out and "token = (set, not shown)" in out
    parsed = tomllib.loads(out)
    assert (parsed["device"], parsed["port"], parsed["allow_origins"]) == ("cpu", 1234, ["http://x"])
    assert "# file" in out and "# flag" in out


def test_serve_from_a_config_file_offers_the_models_folder(assets, tmp_path):
    build_layout(tmp_path / "models", "comfyui", assets)
    config = tmp_path / "easel.toml"
    config.write_text('models_dirs = ["models"]\ndevice = "cpu"\npreload = false\n')
    with running_server([], "--config", str(config), env={"EASEL_CONFIG": "/nonexistent"}) as url, \
            Client(url) as client:
        ids = [m["id"] for m in client.welcome["models"]]
        assert ids[0] == client.welcome["default_model"] == "dreamshaper_tiny"
        assert {"sdxl/juggernaut_xl", "sd-folder", "truncated"} <= set(ids)
        assert client.welcome["loras"] == ["ink.safetensors", "ink_xl.safetensors"]


def test_models_local_lists_what_is_on_disk(assets, tmp_path, capsys):
    build_layout(tmp_path, "a1111", assets)
    assert main(["models", "--local", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for words in ("dreamshaper_tiny", "SD 1.x inpainting", "SDXL LoRA", "ControlNet", "tiny-vae",
                  "problem: truncated", "problem: still being copied", "FLUX.1 single file"):
        assert words in out, words


def _download(endpoint: str, tmp_path, *argv: str, chunk: int | None = None) -> subprocess.CompletedProcess:
    code = ("import sys, huggingface_hub.constants as c\n"
            + (f"c.DOWNLOAD_CHUNK_SIZE = {chunk}\n" if chunk else "")
            + "from easel.cli import main\nsys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-c", code, "download", *argv], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_download_fetches_what_the_pipeline_needs_and_resumes(tiny_sd_path, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_sd_path, repo)
    (repo / "v1-5-pruned.safetensors").write_bytes(b"\0" * 1000)  # a single file the pipeline does not need
    (repo / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"\0" * 1000)
    with FakeHub({"org/tiny": repo}, cut_after=30_000) as hub:
        done = _download(hub.url, tmp_path, "org/tiny", "--to", str(tmp_path / "models"), chunk=8192)
        assert done.returncode == 0, done.stderr
        target = tmp_path / "models" / "tiny"
        assert str(target) in done.stdout and "easel serve --model" in done.stdout
        for rel in ("model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                    "tokenizer/tokenizer_config.json", "text_encoder/model.safetensors"):
            assert (target / rel).read_bytes() == (repo / rel).read_bytes(), rel
        assert not (target / "v1-5-pruned.safetensors").exists()
        assert not (target / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
        resumed = [(p, r) for m, p, r in hub.requests if m == "GET" and r and not r.startswith("bytes=0-")]
        assert resumed, "a dropped connection resumes with a Range request"
        before = len(hub.requests)
        again = _download(hub.url, tmp_path, "org/tiny", "--to", str(tmp_path / "models"))
        assert again.returncode == 0, again.stderr
        weights = [p for m, p, _ in hub.requests[before:] if m == "GET" and p.endswith(".safetensors")]
        assert weights == []  # a second run fetches nothing already there
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    offline = _download(closed, tmp_path, "org/tiny", "--to", str(tmp_path / "elsewhere"))
    assert offline.returncode == 1 and "cannot reach the Hugging Face hub" in offline.stderr


def test_a_pipeline_downloaded_into_the_cache_serves_offline(tiny_sd_path, tmp_path):
    """`easel download` fetches only what Easel loads; huggingface_hub then knows the repo has more files and
    refuses the partial snapshot offline (IncompleteSnapshotError): the server still finds it."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_sd_path, repo)
    (repo / "v1-5-pruned.safetensors").write_bytes(b"\0" * 1000)  # in the repo, not fetched
    with FakeHub({"org/tiny": repo}) as hub:
        done = _download(hub.url, tmp_path, "org/tiny")
    assert done.returncode == 0, done.stderr
    code = ("from easel.server.engine.hub import fetch\n"
            "print(fetch('org/tiny', False, lambda *a: None, lambda: False))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    folder = Path(found.stdout.strip())
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (folder / "v1-5-pruned.safetensors").exists()


def test_download_fetches_a_one_model_repository_such_as_a_controlnet(tiny_sd_path, tmp_path):
    from helpers.tiny_models import build_tiny_controlnet

    repo = tmp_path / "control_v11p_sd15_lineart"
    build_tiny_controlnet(tiny_sd_path, repo)
    (repo / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"\0" * 1000)  # a variant it does not need
    (repo / "extra").mkdir()
    (repo / "extra" / "other.safetensors").write_bytes(b"\0" * 1000)  # nor a subfolder's files
    with FakeHub({"lllyasviel/control_v11p_sd15_lineart": repo}) as hub:
        done = _download(hub.url, tmp_path, "lllyasviel/control_v11p_sd15_lineart", "--to", str(tmp_path / "models"))
    assert done.returncode == 0, done.stderr
    target = tmp_path / "models" / "control_v11p_sd15_lineart"
    for rel in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert (target / rel).read_bytes() == (repo / rel).read_bytes(), rel
    assert not (target / "diffusion_pytorch_model.fp16.safetensors").exists() and not (target / "extra").exists()
    assert f"easel serve --control-model {target}" in done.stdout


# every flag and config key easel serve had before the settings were declared in one place
OLD_FLAGS = {"--model", "--host", "--port", "--device", "--workers", "--ray", "--replicas", "--ray-timeout",
             "--dtype", "--max-loaded", "--attention-slicing", "--vae-tiling", "--cpu-offload", "--no-sd3-t5",
             "--channels-last", "--compile", "--models-dir", "--no-preload", "--threads", "--output-dir",
             "--keep-results", "--keep-days", "--token", "--allow-origin", "--loras-dir", "--control-model",
             "--refiner", "--safety-checker", "--idle-exit", "--parent-pid", "--status-lines", "-v", "--verbose",
             "--config", "--print-config"}
OLD_KEYS = ["models", "models_dirs", "loras_dir", "control_models", "refiner", "safety_checker", "host", "port",
            "token", "allow_origins", "device", "dtype", "max_loaded", "attention_slicing", "vae_tiling",
            "cpu_offload", "preload", "sd3_t5", "channels_last", "compile", "threads", "output_dir", "keep_results",
            "keep_days", "verbose"]
# added since, each a flag and a config key: reference layers' IP-Adapters, the tiny VAE decoder, inpainting models,
# the background mode's model, OpenVINO
NEW_KEYS = {"ip_adapters": "control_models", "openvino": "compile", "decoder": "openvino", "live_decoder": "decoder",
            "prefer_inpaint_models": "sd3_t5", "background_model": "prefer_inpaint_models"}  # key: the one before


def test_flags_keys_and_engine_options_derive_from_the_declarations(tmp_path, monkeypatch):
    import inspect

    from easel.server.engine import Engine
    from easel.server.settings import ServeSettings, engine_kwargs, file_keys

    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    flags = {s for a in serve._actions for s in a.option_strings} - {"-h", "--help"}
    assert flags == OLD_FLAGS | {"--ip-adapter", "--decoder", "--live-decoder", "--no-prefer-inpaint-models",
                                 "--background-model", "--openvino"}
    keys = list(OLD_KEYS)
    for key, before in NEW_KEYS.items():
        keys.insert(keys.index(before) + 1, key)
    assert list(file_keys()) == keys
    kwargs = engine_kwargs(ServeSettings(), ["easel-demo"])
    assert set(kwargs) <= set(inspect.signature(Engine).parameters)
    assert {"models_dir", "control_models", "sd3_t5", "channels_last", "cpu_offload"} <= set(kwargs)
    monkeypatch.setenv("EASEL_CONFIG", str(tmp_path / "none.toml"))
    args = serve_args("--no-sd3-t5", "--models-dir", "m", "--cpu-offload")
    assert apply_settings(args) is None
    derived = engine_kwargs(args.settings, ["x"])
    assert (derived["sd3_t5"], derived["models_dir"], derived["cpu_offload"]) == (False, ["m"], "model")


def test_docs_config_table_is_generated_from_the_declarations():
    """Fails when docs/models.md's settings table is stale: regenerate it with the command in its marker."""
    from easel.server.settings import DOCS_TABLE, markdown_table

    text = (REPO / "docs" / "models.md").read_text(encoding="utf-8")
    begin, end = DOCS_TABLE
    assert begin in text and end in text, "docs/models.md lost its settings table markers"
    block = text.split(begin + "\n", 1)[1].split(end, 1)[0]
    assert block == markdown_table(), \
        "docs/models.md is stale: run `python -m easel.server.settings --markdown docs/models.md`"
    for key in OLD_KEYS:
        assert f"| `{key}` |" in block


def test_a_model_named_at_start_up_is_served_outside_the_models_folder(tiny_sd_path, tmp_path):
    """--models-dir DIR --model PATH (PATH outside DIR): the person starting the server named it, so it
    is served, as the default; a client still picks only among the served ids."""
    (tmp_path / "models").mkdir()
    with running_server([str(tiny_sd_path)], "--models-dir", str(tmp_path / "models"), "--no-preload",
                        "--device", "cpu", env={"EASEL_CONFIG": "/nonexistent"}) as url, Client(url) as client:
        name = os.path.basename(os.path.normpath(tiny_sd_path))
        assert client.welcome["default_model"] == name
        assert [m["id"] for m in client.welcome["models"]] == [name]
