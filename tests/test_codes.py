"""Message types and error codes are enums, each declared once with its docs text (easel.client.codes)."""

from __future__ import annotations

import json
import re

import pytest

from easel.client.codes import ClientMessage, ErrorCode, ServerMessage
from easel.client.protocol import ProtocolError, check_version, doc_tables, error_message
from helpers.server_harness import REPO

SOURCES = [p for d in ("server", "plugin_krita", "plugin_gimp") for p in (REPO / d).rglob("*.py")]


def test_every_generated_table_in_docs_protocol_md_is_current():
    """Fails when docs/protocol.md is stale: run `python -m easel.client.protocol --markdown docs/protocol.md`."""
    text = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    for (begin, end), table in doc_tables().items():
        assert begin in text and end in text, f"docs/protocol.md lost the markers {begin!r}"
        assert text.split(begin + "\n", 1)[1].split(end, 1)[0] == table, "docs/protocol.md is stale"


def test_members_are_their_wire_strings():
    assert ErrorCode.QUEUE_FULL == "queue_full" and f"{ErrorCode.NAN}" == "nan" and str(ClientMessage.ACK) == "ack"
    assert json.dumps(error_message(ErrorCode.NOT_FOUND, "gone")) == json.dumps(error_message("not_found", "gone"))
    assert ErrorCode("internal") is ErrorCode.INTERNAL


def test_the_server_and_plugins_name_error_codes_by_the_enum():
    """Codes are sent as ``ErrorCode`` members (no string literals left to drift), and each one named exists."""
    literals, named = set(), set()
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        literals |= set(re.findall(r"""code\s*=\s*["']([a-z_]+)["']|["']code["']\s*:\s*["']([a-z_]+)["']""", text))
        named |= set(re.findall(r"ErrorCode\.([A-Z_]+)", text))
    assert literals == set(), sorted(literals)
    assert named and named <= {c.name for c in ErrorCode}, sorted(named - {c.name for c in ErrorCode})


def test_the_server_and_client_name_message_types_by_the_enums():
    """Messages are made with ``ClientMessage``/``ServerMessage`` members, never a type string literal."""
    literals, named = set(), set()
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        literals |= set(re.findall(r"""["']type["']\s*:\s*["']([a-z_]+)["']""", text))
        named |= set(re.findall(r"(ClientMessage|ServerMessage)\.([A-Z_]+)", text))
    assert literals == set(), sorted(literals)
    members = {(cls.__name__, m.name) for cls in (ClientMessage, ServerMessage) for m in cls}
    assert named and named <= members, sorted(named - members)


def test_another_protocol_version_names_both_and_the_fix():
    with pytest.raises(ProtocolError) as err:
        check_version({"protocol": 99})
    assert err.value.code == ErrorCode.UNSUPPORTED_PROTOCOL and err.value.field == "protocol"
    assert "99" in str(err.value) and "version 1" in str(err.value) and "update the plugin" in str(err.value)
