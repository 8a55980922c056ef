"""A real HTTP file server on 127.0.0.1 for the weights tests, with misbehaviours on request.

Paths:
  /files/NAME   the file, honouring Range requests (206 + Content-Range)
  /drop/NAME    the first request announces the full length, sends `drop_after` bytes and closes
                the connection; later requests behave like /files/
  /stall/NAME   sends the headers and then nothing until the server stops
  /slow/NAME    like /files/ but paced, so a download takes about `slow_seconds`
  /norange/NAME ignores Range headers and always sends the whole file with 200
  /trickle/NAME announces the full length, then sends one byte every `trickle_seconds`
  /flood/NAME   announces no length and sends the file over and over, `flood_bytes` in all, then closes
  /biglen/NAME  announces and sends the file followed by as many bytes again
Anything else is a 404. Every request is logged as (path, Range header or None).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    def __init__(self, drop_after: int = 1000, slow_seconds: float = 2.0, trickle_seconds: float = 0.2,
                 flood_bytes: int = 20 << 20):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after = drop_after
        self.slow_seconds = slow_seconds
        self.trickle_seconds = trickle_seconds
        self.flood_bytes = flood_bytes
        self.sent: dict[str, int] = {}  # bytes of body written per path (flood, trickle)
        self.stop_event = threading.Event()
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, mode: str, name: str) -> str:
        return f"{self.base_url}/{mode}/{name}"

    def get_requests(self, path: str) -> list[str | None]:
        with self._lock:
            return [rng for p, rng in self.requests if p == path]

    def start(self) -> "FileServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                with server._lock:
                    server.requests.append((self.path, rng))
                parts = self.path.strip("/").split("/", 1)
                if len(parts) != 2 or parts[1] not in server.files:
                    return self._send_status(404)
                mode, name = parts
                data = server.files[name]
                if mode == "stall":
                    self._send_headers(200, len(data))
                    server.stop_event.wait(30)
                    return
                if mode in ("trickle", "flood"):
                    return self._send_paced(mode, data)
                if mode == "biglen":
                    self._send_headers(200, 2 * len(data))
                    self.wfile.write(data + data)
                    return
                if mode == "drop" and name not in server._dropped:
                    server._dropped.add(name)
                    self._send_headers(200, len(data))
                    self.wfile.write(data[: server.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                start = 0
                if rng and rng.startswith("bytes=") and mode != "norange":
                    start = int(rng[len("bytes="):].split("-")[0])
                    if start >= len(data):
                        return self._send_status(416)
                    self._send_headers(206, len(data) - start, f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self._send_headers(200, len(data))
                body = data[start:]
                if mode == "slow":
                    pieces = 40
                    step = max(1, len(body) // pieces)
                    for offset in range(0, len(body), step):
                        self.wfile.write(body[offset:offset + step])
                        self.wfile.flush()
                        time.sleep(server.slow_seconds / pieces)
                else:
                    self.wfile.write(body)

            def _send_paced(self, mode, data):
                if mode == "trickle":
                    self._send_headers(200, len(data))
                else:  # no length: the body ends when the connection closes
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                sent = 0
                try:
                    while not server.stop_event.is_set():
                        if mode == "trickle":
                            if sent >= len(data):
                                return
                            self.wfile.write(data[sent:sent + 1])
                            self.wfile.flush()
                            sent += 1
                            server.stop_event.wait(server.trickle_seconds)
                        else:
                            if sent >= server.flood_bytes:
                                return
                            piece = data[: server.flood_bytes - sent]
                            self.wfile.write(piece)
                            sent += len(piece)
                except OSError:  # the client hung up
                    pass
                finally:
                    with server._lock:
                        server.sent[self.path] = sent

            def _send_headers(self, status, length, content_range=None):
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(length))
                self.send_header("Accept-Ranges", "bytes")
                if content_range:
                    self.send_header("Content-Range", content_range)
                self.end_headers()

            def _send_status(self, status):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


def write_manifest(path: Path, entries: dict, default: str | None = None) -> Path:
    path.write_text(json.dumps({"format": "sifa-manifest/1", "default": default, "weights": entries}))
    return path
