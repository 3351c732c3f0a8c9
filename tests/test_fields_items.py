"""Declared lists of declared items (the request's image-bearing lists): checks, wire form, attachments, docs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from easel.client.fields import FieldError, attachment_names, declare, from_wire, item_types, markdown_table, to_wire


@dataclass
class Guide:
    kind: str = declare(help="what the guide image shows", choices=("lineart", "depth"))
    image: str = declare(help="the guide's attachment", attachment=True)
    strength: float = declare(1.0, "how strongly it steers", low=0.0, high=2.0, wire_default=False)


@dataclass
class Job:
    prompt: str = declare(help="what to paint", group="conditioning")
    guides: list | None = declare(None, "guide images", items=Guide, high=3, group="conditioning")
    seed: int = declare(-1, "the seed", low=-1, group="sampling")


def job(*guides: dict) -> dict:
    return {"prompt": "p", "guides": list(guides)}


def test_items_become_their_dataclass_and_go_back_to_the_same_wire_form():
    wire = job({"kind": "lineart", "image": "guides.0", "strength": 0.5}, {"kind": "depth", "image": "guides.1"})
    parsed = from_wire(Job, wire)
    assert parsed.guides == [Guide("lineart", "guides.0", 0.5), Guide("depth", "guides.1", 1.0)]
    assert to_wire(parsed) == {**wire, "seed": -1}  # the default strength stays off the wire, seed does not
    assert attachment_names(parsed) == ["guides.0", "guides.1"]
    assert from_wire(Job, {"prompt": "p", "guides": [Guide("depth", "g")]}).guides == [Guide("depth", "g")]
    assert item_types(Job) == [Guide]


@pytest.mark.parametrize("item, field, words", [
    ({"kind": "pose", "image": "a"}, "guides[0].kind", "'guides[0].kind' must be lineart or depth (got 'pose')"),
    ({"kind": "depth", "image": "a", "strength": 3}, "guides[0].strength",
     "'guides[0].strength' must be between 0 and 2 (got 3.0)"),
    ({"kind": "depth"}, "guides[0].image", "'guides[0].image' is missing: the guide's attachment"),
    ({"kind": "depth", "image": "a", "weight": 1}, "guides[0].weight", "'guides[0].weight' is not a field"),
    ("depth", "guides[0]", "'guides[0]' must be an object with the fields kind, image, strength"),
])
def test_a_bad_item_names_its_place_and_field(item, field, words):
    with pytest.raises(FieldError) as err:
        from_wire(Job, job(item))
    assert err.value.field == field and str(err.value).startswith(words)


def test_too_many_items_is_refused_with_the_limit():
    guide = {"kind": "depth", "image": "a"}
    with pytest.raises(FieldError, match=r"'guides' may list at most 3 items \(got 4\)"):
        from_wire(Job, job(guide, guide, guide, guide))


def test_docs_table_names_the_item_type_and_the_groups():
    table = markdown_table(Job)
    assert table.splitlines()[0] == "| group | field | type | default | meaning |"
    assert "| conditioning | `guides` | list of `Guide`, at most 3 | none | guide images |" in table
    assert "| `image` | attachment name | required | the guide's attachment |" in markdown_table(Guide)


def test_the_server_wants_exactly_the_attachments_the_lists_name():
    from easel.client.protocol import Image, ProtocolError
    from easel.server.generation import check_named_attachments

    request = from_wire(Job, job({"kind": "depth", "image": "guides.0.image"}))
    png = Image.gray(1, 1, b"\0")
    assert check_named_attachments(request, {"image": png, "guides.0.image": png}) == ["guides.0.image"]
    with pytest.raises(ProtocolError, match="names attachment 'guides.0.image' but did not send it") as err:
        check_named_attachments(request, {"image": png})
    assert err.value.field == "guides.0.image"
    with pytest.raises(ProtocolError, match="unknown attachment 'stray'") as err:
        check_named_attachments(request, {"guides.0.image": png, "stray": png})
    assert err.value.field == "stray"


def test_the_cli_reads_the_files_a_list_flag_names_and_renames_them(tmp_path):
    import io

    from PIL import Image as PILImage

    from easel.cli.generate import attach_files
    from easel.client.fields import declared
    from easel.client.protocol import ProtocolError

    guide = tmp_path / "lines.png"
    buffer = io.BytesIO()
    PILImage.new("RGB", (3, 2), "white").save(buffer, "PNG")
    guide.write_bytes(buffer.getvalue())
    request = Job(prompt="p", guides=[{"kind": "lineart", "image": str(guide)}, {"kind": "depth", "image": str(guide)}])
    attached = attach_files(request, declared(Job))
    assert [g["image"] for g in request.guides] == ["guides.0.image", "guides.1.image"]
    assert list(attached) == ["guides.0.image", "guides.1.image"]
    assert (attached["guides.1.image"].width, attached["guides.1.image"].height) == (3, 2)
    assert from_wire(Job, to_wire(request)).guides[1] == Guide("depth", "guides.1.image")
    missing = Job(prompt="p", guides=[{"kind": "depth", "image": str(tmp_path / "none.png")}])
    with pytest.raises(ProtocolError, match="cannot read --guides"):
        attach_files(missing, declared(Job))
