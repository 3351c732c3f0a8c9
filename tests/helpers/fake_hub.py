"""A Hugging Face hub stand-in on 127.0.0.1 that serves local folders as model repositories, so
downloads run the real ``huggingface_hub`` client offline. ``cut_after`` bytes: the first GET of each
big file stops there (a dropped connection), so clients must resume with a Range request.

    with FakeHub({"org/tiny": "/path/to/folder"}, cut_after=50_000) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, str], cut_after: int | None = None):
        self.repos = {name: os.fspath(folder) for name, folder in repos.items()}
        self.cut_after = cut_after
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._cut: set[str] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo: str) -> list[str]:
        root = self.repos[repo]
        return sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                      for d, _, names in os.walk(root) for f in names)

    def _handler(self) -> type:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _json(self, data: object) -> None:
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _serve(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                for repo, root in hub.repos.items():
                    if path.startswith(f"/api/models/{repo}"):
                        files = hub.files(repo)
                        if "/tree/" in path:
                            return self._json([{"type": "file", "path": f, "oid": COMMIT,
                                                "size": os.path.getsize(os.path.join(root, f))} for f in files])
                        return self._json({"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                           "siblings": [{"rfilename": f} for f in files]})
                    prefix = f"/{repo}/resolve/"
                    if path.startswith(prefix):
                        name = path[len(prefix):].split("/", 1)[1]
                        return self._file(repo, os.path.join(root, name), body)
                self.send_error(404)

            def _file(self, repo: str, file: str, body: bool) -> None:
                if not os.path.isfile(file):
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                data = open(file, "rb").read()
                etag = hashlib.sha256(data).hexdigest()
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                part = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(part)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                if hub.cut_after and len(data) > hub.cut_after and file not in hub._cut and not start:
                    hub._cut.add(file)  # drop the connection part-way, once per file
                    self.wfile.write(part[: hub.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(part)

        return Handler
