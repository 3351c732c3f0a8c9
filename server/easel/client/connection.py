"""Synchronous Easel client: stdlib + websockets only, so editor plugins can bundle it.

Plugins call it from a worker thread; ``cancel`` may be called from another thread while a
worker iterates events (websockets' sync connection allows concurrent send and recv).

    with Client("ws://127.0.0.1:8765") as client:
        result = client.generate(GenerateRequest(job=new_job_id(), prompt="a red circle"))
        result.images[0].image  # protocol.Image (PNG or raw RGBA), with seed, x, y
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import connect

from .codes import ClientMessage
from .fields import attachment_names
from .protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Assembler,
    GenerateRequest,
    Image,
    Message,
    ProtocolError,
    encode_message,
)

DEFAULT_URL = "ws://127.0.0.1:8765"


class ClientError(Exception):
    """The server could not be reached, or spoke out of protocol."""


class JobFailed(Exception):
    """The server ended a job with ``error``; ``field`` names the request field at fault."""

    def __init__(self, code: str, message: str, field: str | None = None, job: str | None = None):
        super().__init__(message)
        self.code, self.field, self.job = code, field, job

    def __str__(self) -> str:
        return self.args[0]


class JobCancelled(Exception):
    """The job ended with ``cancelled``."""


@dataclass
class Event:
    """A message from the server for one job (or for the connection, when ``job`` is None)."""

    type: str
    job: str | None
    data: dict[str, Any]
    images: dict[str, Image] = field(default_factory=dict)


@dataclass
class ResultImage:
    image: Image
    seed: int
    x: int
    y: int


@dataclass
class Result:
    job: str
    images: list[ResultImage]
    parameters: dict[str, Any]
    timings: dict[str, float]


@dataclass
class ProgressInfo:
    job: str
    stage: str  # "queued" | "load" | "denoise" | "upscale" | "preprocess"
    step: int
    total: int
    message: str = ""
    preview: Image | None = None


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def result_from_event(event: Event) -> Result:
    """Build a Result from a ``result`` event: image i is attachment ``image{i}``."""
    images = []
    for i, meta in enumerate(event.data.get("images", [])):
        images.append(ResultImage(event.images[f"image{i}"], meta["seed"], meta.get("x", 0), meta.get("y", 0)))
    return Result(event.data["job"], images, event.data.get("parameters", {}), event.data.get("timings", {}))


def progress_from_event(event: Event) -> ProgressInfo:
    d = event.data
    if event.type == "queued":
        return ProgressInfo(d["job"], "queued", 0, 0, f"queued at position {d.get('position', 0)}")
    return ProgressInfo(d["job"], d.get("stage", "denoise"), d.get("step", 0), d.get("total", 0),
                        d.get("message", ""), event.images.get("preview"))


class Client:
    """One connection to an Easel server; ``connect`` performs the hello/welcome handshake."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 10.0, image_format: str = "png",
                 token: str | None = None, client_name: str = "easel-client"):
        self.url = url
        self.timeout = timeout
        self.image_format = image_format  # format of results: "png" or "rgba"
        self.token = token
        self.client_name = client_name
        self.welcome: dict[str, Any] = {}
        self._ws = None
        self._assembler = Assembler()
        self._send_lock = threading.Lock()

    # -- connection ---------------------------------------------------------------------------
    def connect(self) -> dict[str, Any]:
        """Open the connection and exchange hello/welcome, all within ``timeout`` seconds in total
        (TCP connect, websocket handshake and the wait for ``welcome``).

        On any failure the socket is closed and ClientError says what happened and what to do."""
        if self._ws is not None:
            return self.welcome
        deadline = time.monotonic() + self.timeout
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._ws = connect(self.url, open_timeout=self.timeout, max_size=DEFAULT_MAX_MESSAGE_BYTES,
                               compression=None, additional_headers=headers)
        except Exception as exc:  # OSError, TimeoutError, InvalidURI, InvalidStatus, InvalidHandshake…
            raise ClientError(open_error(self.url, self.timeout, exc, bool(self.token))) from exc
        self._assembler = Assembler()
        try:
            self._send({"type": ClientMessage.HELLO, "protocol": PROTOCOL_VERSION, "client": self.client_name,
                        "image_format": self.image_format})
            event = self._next_event(None, deadline)
        except TimeoutError as exc:
            self._abort(deadline, 1000, "no welcome in time")
            raise ClientError(f"the server at {self.url} accepted the connection but sent no welcome within "
                              f"{self.timeout:g} s: check that the URL is an Easel server's (`easel serve`) "
                              "and that it is not stuck, then try again") from exc
        except ClientError as exc:
            self._abort(deadline)
            raise ClientError(f"no welcome from the server at {self.url}: {exc}. Check that the URL is an "
                              "Easel server's (`easel serve`) and that both sides run the same Easel "
                              "version") from exc
        except BaseException:
            self._abort(deadline)
            raise
        if event.type != "welcome":
            self._abort(deadline)
            if event.type == "error":
                message = event.data.get("message", "no reason given")
                raise ClientError(f"the server at {self.url} refused the connection: {message}")
            raise ClientError(f"the server at {self.url} answered the hello with {event.type!r} instead of "
                              "'welcome': is it an Easel server of the same version?")
        self.welcome = event.data
        return self.welcome

    def _abort(self, deadline: float, code: int = 1002, reason: str = "no welcome") -> None:
        """Close a connection that failed to open, waiting for the server's close frame only
        until ``deadline`` (then the socket is shut)."""
        ws, self._ws = self._ws, None
        if ws is None:
            return
        try:
            ws.close_timeout = max(0.0, deadline - time.monotonic())
            ws.close(code, reason)
        except Exception:  # closing is best effort; the socket is shut either way
            ws.close_socket()

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def __enter__(self) -> Client:
        if self._ws is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- requests -----------------------------------------------------------------------------
    def submit(self, request: GenerateRequest, image: Image | None = None, mask: Image | None = None, *,
               control: Image | None = None, attachments: dict[str, Image] | None = None) -> str:
        """Send a ``generate``; returns its job id. Events follow through ``events()``.

        ``control``: the ControlNet guide for ``request.control_model`` (docs/features.md);
        ``attachments``: the images the request's lists name, by name."""
        GenerateRequest.from_message(request.to_message())  # validate locally first: same rules as the server
        fixed = {k: v for k, v in (("image", image), ("mask", mask), ("control", control)) if v is not None}
        missing = [name for name in attachment_names(request) if name not in (attachments or {})]
        if missing:
            raise ProtocolError(f"the request names attachment {missing[0]!r}: pass that image in 'attachments'",
                                field=missing[0])
        self._send(request.to_message(), {**fixed, **(attachments or {})})
        return request.job

    def cancel(self, job: str) -> None:
        self._send({"type": ClientMessage.CANCEL, "job": job})

    def models(self) -> list[dict[str, Any]]:
        self._send({"type": ClientMessage.MODELS})
        for event in self.events():
            if event.type == "models":
                return event.data["models"]
        raise ClientError("connection closed before the model list arrived")

    def preprocess(self, kind: str, image: Image, on_progress: Callable[[ProgressInfo], None] | None = None,
                   *, job: str | None = None) -> Image:
        """A control-layer guide of ``kind`` made from ``image`` by the server (``preprocess``): the RGB
        guide, the size of ``image``. Raises JobFailed (``field`` ``kind`` for a kind it cannot make)."""
        job = job or new_job_id()
        self._send({"type": ClientMessage.PREPROCESS, "job": job, "kind": kind}, {"image": image})
        for event in self.events():
            if event.job != job and not (event.type == "error" and event.job is None):
                continue
            if event.type == "progress" and on_progress:
                on_progress(progress_from_event(event))
            elif event.type == "control_image":
                return event.images["image"]
            elif event.type == "error":
                d = event.data
                raise JobFailed(d.get("code", "error"), d.get("message", "unknown error"), d.get("field"), job)
        raise ClientError("connection closed before the guide arrived")

    def send(self, message: dict[str, Any], attachments: dict[str, Image] | None = None) -> None:
        """Send any protocol message (for features beyond the helpers here)."""
        self._send(message, attachments)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield events as they arrive; stops when the connection closes."""
        while self._ws is not None:
            try:
                yield self._next_event(timeout)
            except ClientError:
                if self._ws is None:
                    return
                raise

    def generate(self, request: GenerateRequest, image: Image | None = None, mask: Image | None = None,
                 on_progress: Callable[[ProgressInfo], None] | None = None, *, control: Image | None = None,
                 attachments: dict[str, Image] | None = None) -> Result:
        """Submit and wait: returns the Result, raises JobFailed or JobCancelled."""
        job = self.submit(request, image, mask, control=control, attachments=attachments)
        return self.wait_for(job, on_progress)

    def wait_for(self, job: str, on_progress: Callable[[ProgressInfo], None] | None = None, *,
                 reported: tuple[str, ...] = ("queued", "progress"),
                 closed: str = "connection closed before the job finished") -> Result:
        """Read events until ``job`` ends: its Result, or JobFailed / JobCancelled (ClientError
        ``closed`` if the connection ends first). Events of the ``reported`` types go to ``on_progress``."""
        for event in self.events():
            if event.job != job and not (event.type == "error" and event.job is None):
                continue
            if event.type in reported:
                if on_progress:
                    on_progress(progress_from_event(event))
            elif event.type == "result":
                return result_from_event(event)
            elif event.type == "error":
                d = event.data
                raise JobFailed(d.get("code", "error"), d.get("message", "unknown error"), d.get("field"), job)
            elif event.type == "cancelled":
                raise JobCancelled(job)
        raise ClientError(closed)

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, message: dict[str, Any], attachments: dict[str, Image] | None = None) -> None:
        if self._ws is None:
            raise ClientError("not connected: call connect() first")
        frames = encode_message(message, attachments)
        try:
            with self._send_lock:  # a message and its images must not interleave with another
                for frame in frames:
                    self._ws.send(frame)
        except ConnectionClosed as exc:
            self._ws = None
            raise ClientError(f"connection to {self.url} closed: {exc}") from exc

    def _next_event(self, timeout: float | None, deadline: float | None = None) -> Event:
        """The next whole message; TimeoutError after ``timeout`` s per frame or at ``deadline``."""
        while True:
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
            try:
                frame = self._ws.recv(timeout) if self._ws is not None else None
            except TimeoutError:
                raise
            except ConnectionClosed as exc:
                self._ws = None
                raise ClientError(f"connection to {self.url} closed: {exc}") from exc
            if frame is None:
                raise ClientError("not connected")
            try:
                message: Message | None = self._assembler.feed(frame)
            except ProtocolError as exc:
                raise ClientError(f"server sent a malformed message: {exc}") from exc
            if message is not None:
                return Event(message.type, message.job, message.data, message.images)


_WHERE_TOKEN = "$EASEL_TOKEN works everywhere, --token on the command line, the Server token field in GIMP"


def open_error(url: str, timeout: float, exc: BaseException, token_sent: bool = False) -> str:
    """Plain words for a failed TCP connect or websocket handshake: what URL, what happened, what to do."""
    if isinstance(exc, InvalidURI):
        return f"{url!r} is not a websocket address: write it as ws://HOST:PORT (e.g. {DEFAULT_URL})"
    if isinstance(exc, TimeoutError):
        return (f"the Easel server at {url} did not answer within {timeout:g} s: check the host and port, "
                "that `easel serve` is running there and that no firewall drops the connection")
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 401 and token_sent:
            return (f"the Easel server at {url} rejected the token (HTTP 401): use the one it was started with "
                    f"(`easel serve --token`); {_WHERE_TOKEN}")
        if status == 401:
            return (f"the Easel server at {url} requires a token (HTTP 401): give the one it was started with "
                    f"(`easel serve --token`); {_WHERE_TOKEN}")
        if status == 403:
            return (f"the server at {url} refused this client's origin (HTTP 403): editors and the CLI send "
                    "none; see docs/security.md (--allow-origin)")
        return f"{url} answered HTTP {status} instead of opening a websocket: is it an Easel server's address?"
    if isinstance(exc, OSError):
        return f"cannot reach the Easel server at {url}: {exc.strerror or exc}. Is `easel serve` running?"
    if isinstance(exc, InvalidHandshake):
        return f"{url} did not answer as a websocket server ({exc}): is it an Easel server's address?"
    return f"cannot connect to {url}: {exc!r}"
