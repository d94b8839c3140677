"""A real HTTP server on 127.0.0.1 for the download tests: it serves a folder, and handlers can cut a body short."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Iterator


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder without logging each request."""

    def log_message(self, *args):
        pass

    def send_cut_short(self, body: bytes, announced: int) -> None:
        """Announces ``announced`` bytes, sends only ``body`` and closes the connection (a cut transfer)."""
        self.send_response(200)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


@contextlib.contextmanager
def serve(directory: str | os.PathLike, handler: type[http.server.BaseHTTPRequestHandler] = QuietHandler
          ) -> Iterator[str]:
    """Serves ``directory`` on an ephemeral local port for the block; yields its base url ``http://127.0.0.1:PORT``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
