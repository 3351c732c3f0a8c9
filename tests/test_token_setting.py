"""The server token in the plugins: which token goes to which server (editing.resolve_token & co.),
and that a plugin's worker task gets through a real server started with a token."""

from __future__ import annotations

import threading

import pytest

from easel.client import editing
from easel.server.security import Security
from helpers.server_harness import inprocess_server

A, B = "ws://a.example:8765", "ws://b.example:8765"


def test_typed_token_wins_then_environment_then_saved_for_that_url():
    env, saved = {"EASEL_TOKEN": "from-env"}, {A: "saved-a"}
    assert editing.resolve_token("typed", env, saved, A) == "typed"
    assert editing.resolve_token("  ", env, saved, A) == "from-env"
    assert editing.resolve_token("", {}, saved, A) == "saved-a"
    assert editing.resolve_token(" pasted\n", {}, None, A) == "pasted"


def test_a_saved_token_never_goes_to_another_server():
    assert editing.resolve_token("", {}, {A: "saved-a"}, B) is None
    assert editing.resolve_token(None, {"EASEL_TOKEN": ""}, None, A) is None  # empty env = unset


def test_remember_token_keeps_one_per_url_and_forgets_blank():
    saved = editing.remember_token(None, A, "t1")
    saved = editing.remember_token(saved, B, " t2 ")
    assert saved == {A: "t1", B: "t2"}
    assert editing.remember_token(saved, A, "t3") == {A: "t3", B: "t2"}
    assert editing.remember_token(saved, A, "") == {B: "t2"}
    assert editing.remember_token({A: "t", 3: "junk", B: None}, A, None) == {}  # a hand-edited file stays harmless


@pytest.mark.parametrize("token, ok", [("s3cret-Token_1.~", True), (None, True), ("two words", False),
                                       ("tab\there", False), ("naïve", False)])
def test_check_token_names_the_setting_and_the_fix(token, ok):
    problem = editing.check_token(token)
    assert (problem is None) == ok
    if not ok:
        assert "server token" in problem and "easel serve --token" in problem


def _run_models(url: str, token: str | None) -> tuple[object, str | None]:
    done, out = threading.Event(), {}

    def on_done(value, error) -> None:
        out.update(value=value, error=error)
        done.set()

    editing.ClientTask(url, lambda client: client.models(), token=token, on_done=on_done).start()
    assert done.wait(30)
    return out["value"], out["error"]


def test_plugin_task_reaches_a_server_that_requires_a_token():
    from easel.server.engine import Engine

    engine = Engine(["easel-demo"], device="cpu", dtype="float32")
    try:
        with inprocess_server(engine, security=Security(token="s3cret")) as (url, _app):
            token = editing.resolve_token("", {"EASEL_TOKEN": "s3cret"}, None, url)
            models, error = _run_models(url, token)
            assert error is None and [m["id"] for m in models] == ["easel-demo"]
            saved = editing.remember_token(None, url, "s3cret")
            assert _run_models(url, editing.resolve_token("", {}, saved, url))[1] is None
            _none, error = _run_models(url, None)
            assert "requires a token (HTTP 401)" in error and "$EASEL_TOKEN" in error
            _none, error = _run_models(url, editing.resolve_token("wrong", {"EASEL_TOKEN": "s3cret"}, saved, url))
            assert "rejected the token (HTTP 401)" in error
    finally:
        engine.close()
