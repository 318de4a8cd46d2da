"""A file server on the loopback address for the download tests and benchmark: HEAD and GET
with byte ranges, ETag and Last-Modified, and faults on demand (a transfer cut off halfway, a
404, an HTML page in place of a file, a server that stops answering). Binds 127.0.0.1 only."""
from __future__ import annotations

import email.utils
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HTML = b"<!DOCTYPE html><html><head><title>Error 403 (Forbidden)</title></head><body>403.</body></html>\n"


class LoopbackServer:
    """``with LoopbackServer(folder) as s: s.url`` serves ``folder``. ``faults[name]`` is one of
    ``"404"``, ``"html"``, ``"cut"`` (the next GET of the file sends half its body, then closes;
    once), ``"hang"`` (answers the headers, then sends nothing for ``hang_seconds``), or
    ``"no-ranges"``. ``requests`` logs (method, path, Range header) of every request."""

    def __init__(self, root: Path, hang_seconds: float = 30.0):
        self.root = Path(root)
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.hang_seconds = hang_seconds
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):        # quiet
                pass

            def _file(self):
                name = self.path.lstrip("/").split("?")[0]
                return name, server.root / name

            def _headers(self, path: Path, status: int, length: int, extra=None):
                st = path.stat()
                self.send_response(status)
                self.send_header("Content-Length", str(length))
                self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
                self.send_header("ETag", '"' + hashlib.md5(f"{st.st_mtime_ns}-{st.st_size}".encode()).hexdigest() + '"')
                if server.faults.get(path.name) != "no-ranges":
                    self.send_header("Accept-Ranges", "bytes")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()

            def _serve(self, body: bool):
                name, path = self._file()
                server.requests.append((self.command, name, self.headers.get("Range")))
                fault = server.faults.get(name)
                if fault == "404" or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "html":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(HTML)))
                    self.end_headers()
                    if body:
                        self.wfile.write(HTML)
                    return
                size = path.stat().st_size
                start, status, extra = 0, 200, {}
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and fault != "no-ranges":
                    start = int(rng[6:].split("-")[0])
                    status, extra = 206, {"Content-Range": f"bytes {start}-{size - 1}/{size}"}
                self._headers(path, status, size - start, extra)
                if not body:
                    return
                if fault == "hang":
                    server._stop.wait(server.hang_seconds)
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    if fault == "cut":
                        server.faults.pop(name)
                        self.wfile.write(f.read((size - start) // 2))
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    while chunk := f.read(1 << 20):
                        self.wfile.write(chunk)

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def gets(self, name: str) -> list:
        return [r for r in self.requests if r[0] == "GET" and r[1] == name]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
