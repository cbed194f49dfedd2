"""A small HTTP server on 127.0.0.1 for download tests: serves byte strings, honours Range
requests, and can drop the connection part-way through a file."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.drop_after: dict[str, int] = {}  # path -> bytes to send before hanging up (once)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(range_header.split("=")[1].split("-")[0]) if range_header else 0
                if start >= len(data) and range_header:
                    self.send_error(416)
                    return
                self.send_response(206 if range_header else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = server.drop_after.pop(self.path, None)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
