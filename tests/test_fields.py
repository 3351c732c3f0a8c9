"""Request fields are declared once: checks, the docs table and the engine's ranges follow (CLI flags: test_cli)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from easel.client.fields import declare, declared, markdown_table
from easel.client.protocol import REQUEST_TABLE, GenerateRequest, ProtocolError, request_fields
from helpers.server_harness import REPO

RANGED = [d for d in request_fields().values()
          if d.spec.items is None and (d.spec.low is not None or d.spec.high is not None)]


def bad(**patch) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        GenerateRequest.from_message({"type": "generate", "job": "j", "prompt": "p", **patch})
    return err.value


def edges(d) -> list[tuple[float, float]]:
    """(allowed, refused) value pairs at each end of a declared range."""
    step = 1 if d.kind == "int" else 0.01
    out = []
    if d.spec.low is not None:
        out.append((d.spec.low, d.spec.low - step))
    if d.spec.high is not None:
        out.append((d.spec.high - step, d.spec.high) if d.spec.below_high else (d.spec.high, d.spec.high + step))
    return out


@pytest.mark.parametrize("d", RANGED, ids=lambda d: d.name)
def test_every_range_is_enforced_at_both_ends_with_its_message(d):
    for allowed, refused in edges(d):
        GenerateRequest.from_message({"type": "generate", "job": "j", "prompt": "p", d.name: allowed})
        err = bad(**{d.name: refused})
        assert err.field == d.name and f"'{d.name}' must be {d.range_words()} (got {refused!r})" in str(err)


def test_batch_over_the_limit_states_the_real_range():
    assert str(bad(batch=65)) == "'batch' must be between 1 and 64 (got 65)"
    assert "at least 1" not in str(bad(batch=65))
    assert str(bad(refiner_switch=1.0)) == "'refiner_switch' must be at least 0.5 and below 1 (got 1.0)"
    assert str(bad(seed=-7)).endswith("(got -7); -1 picks a random seed")
    assert str(bad(scheduler="warp")) == ("'scheduler' must be one of euler, euler_a, dpmpp_2m, dpmpp_2m_karras, "
                                          "ddim, lcm (got 'warp')")
    assert str(bad(upscale=3)) == "'upscale' must be 2 or 4 (got 3)"
    assert str(bad(steps="ten")) == "'steps' must be an integer or null (got str)"
    assert bad(loras=[{"name": "a", "weight": 5}]).field == "loras"


def test_declarations_need_a_type_and_a_spec():
    @dataclass
    class Undeclared:
        a: int = 3

    @dataclass
    class Union:
        a: int | str = declare(3, "x")

    for cls in (Undeclared, Union):
        with pytest.raises(TypeError, match="declare it as"):
            declared(cls)


def test_docs_table_is_generated_from_the_declarations():
    """Fails when docs/protocol.md's generate table is stale: regenerate it with the command below."""
    text = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    begin, end = REQUEST_TABLE
    assert begin in text and end in text, "docs/protocol.md lost its generate table markers"
    block = text.split(begin + "\n", 1)[1].split(end, 1)[0]
    assert block == markdown_table(GenerateRequest), \
        "docs/protocol.md is stale: run `python -m easel.client.protocol --markdown docs/protocol.md`"
    for name in request_fields():
        assert f"| `{name}` |" in block


def test_markdown_command_rewrites_only_the_table(tmp_path):
    doc = tmp_path / "protocol.md"
    begin, end = REQUEST_TABLE
    doc.write_text(f"# Title\n\n{begin}\n| stale | table |\n{end}\n\nAfter.\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "easel.client.protocol", "--markdown"]
    subprocess.run([*cmd, str(doc)], check=True, cwd=REPO)
    assert doc.read_text() == f"# Title\n\n{begin}\n{markdown_table(GenerateRequest)}{end}\n\nAfter.\n"
    printed = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
    assert printed.startswith(markdown_table(GenerateRequest))


def test_engine_ranges_are_the_protocols():
    """The engine checks the same declared range (the refiner switch once differed: 0..1 vs 0.5..<1)."""
    from PIL import Image

    from easel.server.engine.runner import validate
    from easel.server.engine.types import EngineError, EngineJob

    common = {"width": 64, "height": 64, "refiner": True, "variation_seed": 1, "control_model": "c"}
    for name, value in (("refiner_switch", 0.3), ("control_strength", 2.5), ("variation_strength", -0.1),
                        ("guidance", 101.0)):
        job = EngineJob("txt2img", "p", control_image=Image.new("RGB", (64, 64)), **common, **{name: value})
        with pytest.raises(EngineError) as err:
            validate(job)
        assert err.value.field == name
        assert str(err.value) == str(bad(**{name: value}))
