"""Who may connect: loopback by default, a token for anything else, no browser pages.

A web page on any site can open ``ws://127.0.0.1:8765``; browsers always send an ``Origin``
header, editors and the CLI never do. So connections with an Origin are refused unless it is
in the allow-list. Binding to a non-loopback address needs a token, which every connection
must then present (``Authorization: Bearer <token>`` header, or ``?token=`` in the URL).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

TOKEN_ENV = "EASEL_TOKEN"


class SecurityError(Exception):
    """The server must not start with these settings."""


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


@dataclass
class Security:
    token: str | None = None
    allowed_origins: list[str] = field(default_factory=list)

    def check_bind(self, host: str) -> None:
        if not is_loopback(host) and not self.token:
            raise SecurityError(
                f"refusing to listen on {host}: anyone on the network could use this machine. "
                f"Set a token with --token or the {TOKEN_ENV} environment variable (clients then send it), "
                "or listen on 127.0.0.1")

    def origins(self) -> list[str | None]:
        """For websockets' ``origins``: None admits clients that send no Origin (editors, CLI)."""
        return [None, *self.allowed_origins]

    def process_request(self, connection, request):
        """websockets hook: refuse connections without the right token (401)."""
        if not self.token:
            return None
        presented = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            presented = auth[len("Bearer "):].strip()
        else:
            presented = (parse_qs(urlsplit(request.path).query).get("token") or [None])[0]
        if presented is None or not hmac.compare_digest(presented.encode(), self.token.encode()):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Easel: a valid token is required\n")
        return None
