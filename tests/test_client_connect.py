"""Client.connect against misbehaving servers on 127.0.0.1: one deadline, socket closed, plain errors.

Each server is real (websockets' asyncio server, or a bare TCP listener) and runs on its own thread;
it records whether it saw the hello and when it saw the connection close.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from easel.client.connection import Client, ClientError

TIMEOUT = 1.0
SLACK = 0.75  # scheduling on a busy 2-core machine; the deadline itself is TIMEOUT


class Seen:
    """What the server side observed on its one connection."""

    def __init__(self) -> None:
        self.hello = threading.Event()
        self.closed = threading.Event()
        self.close_code: int | None = None


@contextmanager
def ws_server(reply: Callable[[ServerConnection], Awaitable[None]], process_request=None) -> Iterator[tuple[str, Seen]]:
    """A raw websockets server: on ``hello`` it runs ``reply``, then reads until the client closes."""
    seen = Seen()
    ready = threading.Event()
    box: dict = {}

    async def handler(ws: ServerConnection) -> None:
        try:
            async for frame in ws:
                if isinstance(frame, str) and json.loads(frame).get("type") == "hello":
                    seen.hello.set()
                    await reply(ws)
        except ConnectionClosed:
            pass
        seen.close_code = ws.close_code
        seen.closed.set()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
            box["port"] = server.sockets[0].getsockname()[1]
            box["stop"] = asyncio.get_running_loop().create_future()
            box["loop"] = asyncio.get_running_loop()
            ready.set()
            await box["stop"]

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"ws://127.0.0.1:{box['port']}", seen
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set_result, None)
        thread.join(10)


async def silent(_ws: ServerConnection) -> None:
    """Accept the hello and never answer it."""


async def garbage(ws: ServerConnection) -> None:
    await ws.send("this is not Easel's protocol {")


async def wrong_type(ws: ServerConnection) -> None:
    await ws.send(json.dumps({"type": "progress", "job": "x", "step": 1, "total": 2}))


async def refuses(ws: ServerConnection) -> None:
    await ws.send(json.dumps({"type": "error", "job": None, "code": "unsupported_protocol", "field": "protocol",
                              "message": "protocol 1 is not supported; upgrade Easel"}))


def timed_connect(url: str, **kwargs) -> tuple[ClientError, float, Client]:
    client = Client(url, timeout=TIMEOUT, **kwargs)
    t0 = time.monotonic()
    with pytest.raises(ClientError) as info:
        client.connect()
    return info.value, time.monotonic() - t0, client


def test_no_welcome_times_out_within_the_deadline_and_closes():
    with ws_server(silent) as (url, seen):
        error, elapsed, client = timed_connect(url)
        assert seen.hello.is_set()
        assert elapsed < TIMEOUT + SLACK, elapsed
        message = str(error)
        assert url in message and "no welcome" in message and f"{TIMEOUT:g} s" in message and "easel serve" in message
        assert not isinstance(error, TimeoutError) and isinstance(error.__cause__, TimeoutError)
        assert not client.connected
        assert seen.closed.wait(5), "the server never saw the connection close"


@pytest.mark.parametrize("reply, words", [
    (garbage, "not valid JSON"),
    (wrong_type, "'progress' instead of 'welcome'"),
    (refuses, "refused the connection: protocol 1 is not supported"),
])
def test_bad_answer_to_hello_is_a_clear_error_and_closes(reply, words):
    with ws_server(reply) as (url, seen):
        error, elapsed, client = timed_connect(url)
        assert elapsed < TIMEOUT, elapsed  # no need to wait for the deadline
        assert url in str(error) and words in str(error), str(error)
        assert not client.connected
        assert seen.closed.wait(5), "the server never saw the connection close"
        assert seen.close_code == 1002  # the client closed it, as a protocol error


def test_tcp_accept_without_handshake_counts_against_the_same_deadline():
    """A listener that accepts and never speaks HTTP: the handshake wait is bounded too."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}"
        accepted: dict = {}

        def accept() -> None:
            conn, _ = listener.accept()
            conn.settimeout(10)
            accepted["request"] = conn.recv(4096)
            accepted["eof"] = conn.recv(4096) == b""  # b"": the client closed its side
            conn.close()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        error, elapsed, client = timed_connect(url)
        thread.join(10)
    assert elapsed < TIMEOUT + SLACK, elapsed
    assert accepted["request"].startswith(b"GET ") and accepted["eof"]
    assert url in str(error) and f"did not answer within {TIMEOUT:g} s" in str(error) and "easel serve" in str(error)
    assert not client.connected


def test_missing_token_names_the_setting():
    def unauthorized(_conn, _request) -> Response:
        return Response(401, "Unauthorized", Headers(), b"token required\n")

    with ws_server(silent, process_request=unauthorized) as (url, seen):
        error, _elapsed, _client = timed_connect(url)
    assert "requires a token (HTTP 401)" in str(error) and "EASEL_TOKEN" in str(error) and url in str(error)
    assert not seen.hello.is_set()
    with ws_server(silent, process_request=unauthorized) as (url, seen):
        error, _elapsed, _client = timed_connect(url, token="wrong")
    assert "rejected the token (HTTP 401)" in str(error) and "easel serve --token" in str(error)


def test_refused_port_and_bad_url_are_plain_errors():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed below: nothing listens there any more
    error, elapsed, _client = timed_connect(f"ws://127.0.0.1:{port}")
    assert f"cannot reach the Easel server at ws://127.0.0.1:{port}" in str(error) and "easel serve" in str(error)
    assert elapsed < TIMEOUT
    error, _elapsed, _client = timed_connect("http//127.0.0.1:8765")
    assert "is not a websocket address" in str(error) and "ws://HOST:PORT" in str(error)


def test_a_good_server_still_connects():
    async def welcome(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "welcome", "protocol": 1, "server": "fake"}))

    with ws_server(welcome) as (url, seen):
        with Client(url, timeout=TIMEOUT) as client:
            assert client.welcome["server"] == "fake"
        assert seen.closed.wait(5) and seen.close_code == 1000
