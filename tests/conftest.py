"""Test-wide settings: offline hub, quiet progress bars, a small thread count on a 2-core box."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("EASEL_CONFIG", os.path.join(os.path.dirname(__file__), "no-such-easel-config.toml"))  # not yours


# ----------------------------------------------------------------------------- tiny diffusers models
# Session-wide tiny random-weight pipelines (see tests/helpers/tiny_models.py), built on first use in a
# temporary folder; each takes well under a second. Engine tests and server tests share them.

import pytest


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory) -> str:
    """A saved tiny SD 1.x diffusers folder (native 64 px, VAE scale factor 8, Euler scheduler)."""
    from helpers.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny_models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory) -> str:
    """A saved tiny SDXL diffusers folder (native 64 px)."""
    from helpers.tiny_models import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny_models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_sd_single_file(tiny_sd_path, tmp_path_factory) -> str:
    """``tiny_sd_path`` converted to one original-layout .safetensors file (no config folder beside it).

    Serve it as ``f"{tiny_sd_single_file}#config={tiny_sd_path}"``.
    """
    from helpers.tiny_models import write_single_file

    return write_single_file(tiny_sd_path, tmp_path_factory.mktemp("single_file") / "tiny-sd-file.safetensors")


@pytest.fixture(scope="session")
def tiny_sd3_path(tmp_path_factory) -> str:
    """A saved tiny SD3 diffusers folder (two CLIPs + T5, native 64 px; tests/helpers/tiny_flow_models.py)."""
    from helpers.tiny_flow_models import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("tiny_models") / "tiny-sd3")


@pytest.fixture(scope="session")
def tiny_flux_path(tmp_path_factory) -> str:
    """A saved tiny FLUX.1-dev-like diffusers folder (CLIP + T5, guidance embedding)."""
    from helpers.tiny_flow_models import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("tiny_models") / "tiny-flux-dev")


@pytest.fixture(scope="session")
def tiny_ip_adapter_repo(tiny_sd_path, tiny_sdxl_path, tmp_path_factory) -> str:
    """A tiny random IP-Adapter folder in h94/IP-Adapter's layout (SD 1.5 and SDXL adapters, image encoders)."""
    from helpers.tiny_ip_adapter import build_tiny_ip_adapter_repo

    return build_tiny_ip_adapter_repo(tmp_path_factory.mktemp("refs") / "IP-Adapter", tiny_sd_path, tiny_sdxl_path)


@pytest.fixture(scope="module")
def ip_adapter_engine(tiny_sd_path, tiny_sdxl_path, tiny_ip_adapter_repo):
    """An engine of the tiny SD 1.x and SDXL models with the tiny IP-Adapters (a module's reference tests)."""
    from easel.server.engine import Engine

    with Engine([tiny_sd_path, tiny_sdxl_path], device="cpu", dtype="float32",
                ip_adapters=[tiny_ip_adapter_repo]) as eng:
        yield eng


@pytest.fixture(scope="session")
def tiny_2026_paths(tmp_path_factory) -> dict[str, str]:
    """The tiny 2026 families, built once: Chroma, Z-Image, Qwen-Image and FLUX.2 Klein, the latter as its
    base (``flux2-klein``) and its distilled 4B (``flux2-klein-4B``): the variant follows the folder's name."""
    from helpers.tiny_2026_models import (
        build_tiny_chroma,
        build_tiny_flux2_klein,
        build_tiny_qwen_image,
        build_tiny_z_image,
    )

    root = tmp_path_factory.mktemp("tiny_2026")
    return {"chroma": build_tiny_chroma(root / "tiny-chroma"), "z-image": build_tiny_z_image(root / "tiny-z-image"),
            "qwen-image": build_tiny_qwen_image(root / "tiny-qwen-image"),
            "flux2-klein": build_tiny_flux2_klein(root / "tiny-flux2-klein-base", distilled=False),
            "flux2-klein-4B": build_tiny_flux2_klein(root / "tiny-flux2-klein-4B")}


# ----------------------------------------------------------------------------- shared servers
# A real server on 127.0.0.1 with the tiny SD model and a result store (in process), and one
# `easel serve` subprocess of it; the server, CLI, upscale, hires and reliability tests use them.


@pytest.fixture(scope="module")
def served(tiny_sd_path, tmp_path_factory):
    """(url, app) of an in-process server with the tiny SD model and a result store."""
    from helpers.server_harness import stored_server

    with stored_server([tiny_sd_path], tmp_path_factory.mktemp("results")) as found:
        yield found


@pytest.fixture
def client(served):
    """A connected client of ``served`` that asks for raw RGBA images."""
    from easel.client.connection import Client

    with Client(served[0], image_format="rgba") as c:
        yield c


@pytest.fixture(scope="module")
def url(tiny_sd_path, tmp_path_factory):
    """The url of a real `easel serve` subprocess with the tiny SD model and its own result store."""
    from helpers.server_harness import running_server

    out = tmp_path_factory.mktemp("served-results")
    with running_server([str(tiny_sd_path)], "--output-dir", str(out)) as u:
        yield u


# ----------------------------------------------------------------------------- the background mode
@pytest.fixture(scope="session")
def redness_model(tmp_path_factory) -> str:
    """A tiny rembg background-removal model (.onnx) whose subject is what is redder than blue
    (tests/helpers/tiny_background.py): the ``background`` selection mode's tests run it."""
    from helpers.tiny_background import build_redness_model

    return str(build_redness_model(tmp_path_factory.mktemp("rembg") / "redness.onnx"))


@pytest.fixture(scope="module")
def background_engine(tiny_sd_path, redness_model):
    """An Engine with the tiny SD model whose background jobs find the subject with ``redness_model``."""
    from easel.server.engine import Engine

    with Engine([tiny_sd_path], device="cpu", dtype="float32", background_model=redness_model) as eng:
        yield eng


# ----------------------------------------------------------------------------- engine loading
@pytest.fixture(scope="module")
def folder_result(tiny_sd_path):
    """The tiny SD folder's pixels for ``helpers.loading_checks.job()``: what every other way of loading it must give."""
    from easel.server.engine import Engine
    from helpers.loading_checks import generate

    with Engine([tiny_sd_path], device="cpu", dtype="float32") as eng:
        return generate(eng)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own (offline: tests/conftest.py sets HF_HUB_OFFLINE)."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert hub_constants.HF_HUB_OFFLINE, "tests must run with HF_HUB_OFFLINE=1 (tests/conftest.py sets it)"
    return cache
