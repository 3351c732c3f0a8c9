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


def test_refiner_follows_the_models_features_not_family_names():
    """The plugins enable the refiner for the models whose welcome ``features`` list it: a family name
    means nothing to the client (an SDXL entry without ``refiner`` is left out, an old server's entry
    without ``features`` may use everything)."""
    sd = ["negative_prompt", "scheduler", "loras", "control_model", "variation_seed"]
    welcome = {"default_model": "sd15", "refiner": ["xl-refiner"], "models": [
        {"id": "sd15", "family": "sd1", "features": sd}, {"id": "xl", "family": "sdxl", "features": [*sd, "refiner"]},
        {"id": "xl-no-refiner", "family": "sdxl", "features": sd}, {"id": "new", "family": "x", "features": ["refiner"]},
        {"id": "old-server-model", "family": "sd1"}]}
    choices = editing.feature_choices(welcome, "xl")
    assert choices["refiner_models"] == ["xl", "new", "old-server-model"] and choices["refiner"] is True
    assert editing.feature_choices(welcome, "xl-no-refiner")["refiner"] is False
    assert editing.feature_choices(welcome)["refiner"] is False  # the default model, SD 1.x


def test_edit_models_are_those_whose_features_list_edit():
    """Both editors switch to Edit (the canvas or selection is the picture to edit) for these models only; an
    old server's entry without ``features`` is not one, nor is an unknown id."""
    welcome = {"default_model": "kontext", "models": [
        {"id": "kontext", "family": "flux-kontext", "features": ["loras", "edit"]},
        {"id": "flux", "family": "flux", "features": ["loras"]}, {"id": "old", "family": "sd1"}]}
    assert editing.edit_models(welcome) == ["kontext"]
    assert editing.is_edit_model(welcome, "") and editing.is_edit_model(welcome, None)  # the default model
    assert not any(editing.is_edit_model(welcome, m) for m in ("flux", "old", "missing"))
    assert editing.edit_models(None) == [] and not editing.is_edit_model(None, "kontext")
