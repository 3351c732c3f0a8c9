"""`easel generate` as a user runs it, against real servers on 127.0.0.1 with the tiny model; and
``easel models --local`` names the built-in demo model."""

from __future__ import annotations

import subprocess
import sys

from test_cli import keep_env

from server_harness import REPO


def test_models_local_names_the_builtin_demo_model_once_nothing_else_is_there(tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "easel", "models", "--local", "--models-dir", str(tmp_path / "empty")],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin",
                            **keep_env("PYTHONPATH")})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert r.stdout.count("nothing found") == 1, r.stdout
    assert lines[-1] == "nothing found in the models folders or the Hugging Face cache; built in: easel-demo"
    [row] = [line for line in lines if line.split()[1:2] == ["easel-demo"]]
    assert row.split()[0] == "checkpoint" and "built-in demo" in row and "64px" in row, r.stdout
    assert "easel serve --model easel-demo" in r.stdout
