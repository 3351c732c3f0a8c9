"""The sans-IO protocol core: image frames, message assembly, request validation."""

import json
import struct

import pytest

from easel.client.protocol import (
    Assembler,
    GenerateRequest,
    Image,
    ProtocolError,
    check_version,
    decode_image,
    encode_image,
    encode_message,
    png_size,
)

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a5ad3f6b0000000049454e44ae426082"
)


def test_image_frame_header_is_16_bytes_big_endian():
    frame = encode_image(Image.rgba(2, 3, bytes(24)))
    assert frame[:4] == b"EZIM" and frame[4] == 1 and frame[5] == 2
    assert struct.unpack(">II", frame[8:16]) == (2, 3)
    assert len(frame) == 16 + 24
    assert decode_image(frame) == Image.rgba(2, 3, bytes(24))


def test_png_size_is_read_from_ihdr():
    assert png_size(PNG_1x1) == (1, 1)
    assert Image.png(PNG_1x1).format == "png"


@pytest.mark.parametrize("frame, field_hint", [
    (b"EZIM", "shorter"),
    (b"XXXX" + bytes(12), "header"),
    (struct.pack(">4sBBHII", b"EZIM", 1, 9, 0, 1, 1), "format code"),
    (struct.pack(">4sBBHII", b"EZIM", 1, 2, 0, 2, 2) + bytes(5), "expected"),
    (struct.pack(">4sBBHII", b"EZIM", 1, 2, 0, 0, 2), "positive"),
])
def test_bad_image_frames_are_named(frame, field_hint):
    with pytest.raises(ProtocolError) as err:
        decode_image(frame, "mask")
    assert err.value.field == "mask" and field_hint in str(err.value)


def test_assembler_joins_text_and_binary_frames():
    frames = encode_message({"type": "generate", "job": "a"}, {"image": Image.rgba(1, 1, b"\1\2\3\4"),
                                                             "mask": Image.gray(1, 1, b"\xff")})
    assert json.loads(frames[0])["attachments"] == ["image", "mask"]
    asm = Assembler()
    assert asm.feed(frames[0]) is None and asm.waiting_for_images
    assert asm.feed(frames[1]) is None
    msg = asm.feed(frames[2])
    assert msg.type == "generate" and msg.job == "a"
    assert msg.images["mask"].data == b"\xff" and msg.images["image"].data == b"\1\2\3\4"


def test_assembler_recovers_after_errors():
    asm = Assembler()
    for bad, field in (("{nope", "json"), ("[1]", "json"), ('{"x": 1}', "type"), (b"\0" * 20, "attachments"),
                       ('{"type": "a", "attachments": "image"}', "attachments")):
        with pytest.raises(ProtocolError) as err:
            asm.feed(bad)
        assert err.value.field == field
    # a text frame while images are due: error, then the new message is not swallowed silently
    asm.feed('{"type": "generate", "attachments": ["image"]}')
    with pytest.raises(ProtocolError):
        asm.feed('{"type": "models"}')
    assert asm.feed('{"type": "models"}').type == "models"


def test_request_roundtrip_and_defaults():
    req = GenerateRequest(job="j1", prompt="a red circle", seed=5, strength=0.5, x=3, y=4)
    again = GenerateRequest.from_message(json.loads(json.dumps(req.to_message())))
    assert again == req


@pytest.mark.parametrize("patch, field", [
    ({"strength": 1.5}, "strength"), ({"strength": -0.1}, "strength"), ({"steps": 0}, "steps"),
    ({"width": 0}, "width"), ({"height": -5}, "height"), ({"scheduler": "warp"}, "scheduler"),
    ({"steps": "ten"}, "steps"), ({"steps": 2.5}, "steps"), ({"seed": True}, "seed"),
    ({"prompt": 3}, "prompt"), ({"colour": "red"}, "colour"), ({"batch": 0}, "batch"),
    ({"guidance": float("nan")}, "guidance"), ({"seed": -7}, "seed"), ({"job": ""}, "job"),
])
def test_bad_request_fields_are_named(patch, field):
    data = {"type": "generate", "job": "j", "prompt": "p", **patch}
    with pytest.raises(ProtocolError) as err:
        GenerateRequest.from_message(data)
    assert err.value.field == field
    assert field in str(err.value)


@pytest.mark.parametrize("missing", ["job", "prompt"])
def test_missing_fields_are_named(missing):
    data = {"type": "generate", "job": "j", "prompt": "p"}
    del data[missing]
    with pytest.raises(ProtocolError) as err:
        GenerateRequest.from_message(data)
    assert err.value.field == missing


def test_protocol_version_must_match():
    check_version({"protocol": 1})
    with pytest.raises(ProtocolError) as err:
        check_version({"protocol": 99})
    assert err.value.code == "unsupported_protocol" and "version 1" in str(err.value)


@pytest.mark.parametrize("patch, field", [
    ({"loras": [{"name": 3}]}, "loras"), ({"loras": [{"name": "a", "weight": 9}]}, "loras"),
    ({"loras": [{"name": "a", "extra": 1}]}, "loras"), ({"loras": "a"}, "loras"),
    ({"loras": [{"name": f"l{i}"} for i in range(9)]}, "loras"), ({"control_strength": 3}, "control_strength"),
    ({"variation_strength": 1.5}, "variation_strength"), ({"upscale": 3}, "upscale"),
    ({"refiner_switch": 1.0}, "refiner_switch"), ({"replace": 1}, "replace"), ({"variation_seed": -1}, "variation_seed"),
])
def test_bad_feature_fields_are_named(patch, field):
    with pytest.raises(ProtocolError) as err:
        GenerateRequest.from_message({"type": "generate", "job": "j", "prompt": "p", **patch})
    assert err.value.field == field


def test_feature_fields_roundtrip_and_defaults_stay_off_the_wire():
    plain = GenerateRequest(job="j", prompt="p").to_message()
    assert not {"replace", "refiner", "control_strength", "variation_strength"} & set(plain)
    rich = GenerateRequest(job="j", prompt="p", loras=[{"name": "ink", "weight": 0.7}], variation_seed=3,
                           variation_strength=0.2, upscale=2, replace=True, control_model="scribble")
    assert GenerateRequest.from_message(json.loads(json.dumps(rich.to_message()))) == rich
