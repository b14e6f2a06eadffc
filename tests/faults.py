"""A fault-injecting HTTP proxy for tests: sits in front of the moto server and fails requests on demand.

Faults are consumed one per request, in order: "500" and "503" answer with an S3 error,
"403" with AccessDenied, "drop" closes the connection without a reply, and "truncate" sends
the real headers and half of the real body, then closes. `fail_after(n)` lets n requests
through and answers 403 to every later one (a sync dying part-way through); `heal()` ends that.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_ERRORS = {"500": "InternalError", "503": "SlowDown", "403": "AccessDenied"}


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = urlparse(upstream)
        self.faults: deque[str] = deque()
        self.requests = 0
        self.passed_limit: int | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, *faults: str) -> None:
        with self._lock:
            self.faults.extend(faults)

    def fail_after(self, passed: int) -> None:
        with self._lock:
            self.passed_limit = self.requests + passed

    def heal(self) -> None:
        """Let every later request through again (undoes `fail_after`; injected faults still apply)."""
        with self._lock:
            self.passed_limit = None

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self.faults:
                return self.faults.popleft()
            if self.passed_limit is not None and self.requests > self.passed_limit:
                return "403"
            return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send_error(self, status: str) -> None:
                body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{_ERRORS[status]}</Code>"
                        f"<Message>injected fault</Message></Error>").encode()
                self.send_response(int(status))
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                body = self._read_body()
                fault = proxy._next_fault()
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault in _ERRORS:
                    self._send_error(fault)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    payload = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status)
                length = reply.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(payload))
                for name, value in reply.getheaders():
                    if name.lower() not in {"transfer-encoding", "content-length", "connection", "date", "server"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", length)
                self.end_headers()
                if fault == "truncate" and self.command != "HEAD":
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
