"""The plugins' model and LoRA lists from a server's welcome: broken library entries left out (and
said why), LoRAs limited to the chosen model's family."""

from __future__ import annotations

from easel.client import editing

WELCOME = {
    "default_model": "sd15",
    "models": [{"id": "sd15", "family": "sd1", "loras": ["ink.safetensors"]},
               {"id": "xl", "family": "sdxl", "loras": ["xl-ink.safetensors"]},
               {"id": "broken", "family": "sd1", "problem": "truncated: 1.0 of 2.0 MiB present"},
               {"id": "old-server-model", "family": "sd1"}],
    "loras": ["ink.safetensors", "xl-ink.safetensors"], "control_models": [], "refiner": [],
}


def test_broken_models_are_not_offered_but_explained():
    ids, default = editing.model_choices(WELCOME)
    assert ids == ["sd15", "xl", "old-server-model"] and default == "sd15"
    assert editing.ui.model_problems(WELCOME) == ["broken: truncated: 1.0 of 2.0 MiB present"]


def test_loras_follow_the_model():
    assert editing.feature_choices(WELCOME)["loras"] == ["ink.safetensors"]  # the default model's
    assert editing.feature_choices(WELCOME, "xl")["loras"] == ["xl-ink.safetensors"]
    assert editing.feature_choices(WELCOME, "old-server-model")["loras"] == WELCOME["loras"]  # no list: all
    assert editing.feature_choices(WELCOME, "xl")["sdxl"] == ["xl"]
