"""A minimal Hugging Face Hub file endpoint on 127.0.0.1 for offline tests of weight downloads."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    """Serves ``/{repo_id}/resolve/{revision}/{filename}`` with the headers ``hf_hub_download`` needs.

    ``files`` maps ``(repo_id, revision, filename)`` to bytes; ``requests`` records each path served.
    """

    commit = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self) -> None:
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _lookup(self) -> bytes | None:
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                key = ("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
                return hub.files.get(key)

            def _headers(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()

            def _missing(self) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:
                body = self._lookup()
                self._headers(body) if body is not None else self._missing()

            def do_GET(self) -> None:
                body = self._lookup()
                if body is None:
                    self._missing()
                    return
                self._headers(body)
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self, repo_id: str, revision: str, filename: str, path_or_bytes: Path | bytes) -> None:
        data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
        self.files[(repo_id, revision, filename)] = data

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
