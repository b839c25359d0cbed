"""A throwaway HTTP mirror on 127.0.0.1 for the download tests: good, 404, corrupting or dropping."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["good", "404", "corrupt", "drop"]


class MirrorServer:
    """Serves ``files`` (name -> bytes) at ``base_url`` + name, misbehaving as ``mode`` says.

    good: the bytes. 404: every request is Not Found. corrupt: same length, one byte flipped.
    drop: the full Content-Length is announced, half the body is sent, then the socket is closed.
    ``requested`` lists the file names asked for, in order.
    """

    def __init__(self, files: dict[str, bytes], mode: Mode = "good") -> None:
        self.files, self.mode = files, mode
        self.requested: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/data/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> MirrorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                filename = self.path.rsplit("/", 1)[-1]
                mirror.requested.append(filename)
                if mirror.mode == "404" or filename not in mirror.files:
                    self.send_error(404)
                    return
                body = mirror.files[filename]
                if mirror.mode == "corrupt":
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mirror.mode == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
                pass

        return Handler


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/data/"
