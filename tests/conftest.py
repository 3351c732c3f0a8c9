"""Test-wide settings: offline hub, quiet progress bars, a small thread count on a 2-core box."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("EASEL_CONFIG", os.path.join(os.path.dirname(__file__), "no-such-easel-config.toml"))  # not yours


# ----------------------------------------------------------------------------- tiny diffusers models
# Session-wide tiny random-weight pipelines (see tests/tiny_models.py), built on first use in a
# temporary folder; each takes well under a second. Engine tests and server tests share them.

import pytest


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory) -> str:
    """A saved tiny SD 1.x diffusers folder (native 64 px, VAE scale factor 8, Euler scheduler)."""
    from tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny_models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory) -> str:
    """A saved tiny SDXL diffusers folder (native 64 px)."""
    from tiny_models import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny_models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_sd_single_file(tiny_sd_path, tmp_path_factory) -> str:
    """``tiny_sd_path`` converted to one original-layout .safetensors file (no config folder beside it).

    Serve it as ``f"{tiny_sd_single_file}#config={tiny_sd_path}"``.
    """
    from tiny_models import write_single_file

    return write_single_file(tiny_sd_path, tmp_path_factory.mktemp("single_file") / "tiny-sd-file.safetensors")


@pytest.fixture(scope="session")
def tiny_sd3_path(tmp_path_factory) -> str:
    """A saved tiny SD3 diffusers folder (two CLIPs + T5, native 64 px; tests/tiny_flow_models.py)."""
    from tiny_flow_models import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("tiny_models") / "tiny-sd3")


@pytest.fixture(scope="session")
def tiny_flux_path(tmp_path_factory) -> str:
    """A saved tiny FLUX.1-dev-like diffusers folder (CLIP + T5, guidance embedding)."""
    from tiny_flow_models import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("tiny_models") / "tiny-flux-dev")
