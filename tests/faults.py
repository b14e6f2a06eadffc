"""A fault-injecting HTTP proxy for tests: sits in front of the moto server and fails requests on demand.

Faults are consumed one per request, in order: "500" and "503" answer with an S3 error,
"403" with AccessDenied, "drop" closes the connection without a reply, "truncate" sends
the real headers and half of the real body, then closes, "applied-drop" lets the server apply
the request and then closes without a reply, "corrupt" flips one byte of the real body, and
"hold" sends the headers and half the body, then waits for `release()` (or the proxy's end),
however long that takes, and "drop-last-part" leaves the last part out of a CompleteMultipartUpload
(the object the server assembles is not the file). `inject_on(method, path_part, fault)` saves a fault for the first
request of that method whose path contains `path_part`. `fail_after(n)` lets n requests
through and answers 403 to every later one (a sync dying part-way through); `heal()` ends that.
`at_random(fault, probability, method)` gives each later request (of that method, or any) that
fault with that probability, drawn from a seeded generator: a throttling, flaky server
(`at_random("503", 0.2)`, `at_random("truncate", 0.05, "GET")`).

`encrypted = True` makes the proxy answer as a bucket with SSE-KMS does: every ETag becomes a
value that is not the content's MD5 (consistently, so conditional requests still work) and
replies carry `x-amz-server-side-encryption: aws:kms`.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import re
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
        self.targeted: list[tuple[str, str, str]] = []
        self.random_faults: list[tuple[str, float, str | None]] = []
        self.injected: dict[str, int] = {}  # faults given at random, by kind
        self._random = random.Random(21)
        self.encrypted = False
        self.held = threading.Event()  # set when a "hold" fault has sent half its body
        self._release = threading.Event()
        self._real_etags: dict[str, str] = {}
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

    def inject_on(self, method: str, path_part: str, fault: str) -> None:
        with self._lock:
            self.targeted.append((method, path_part, fault))

    def at_random(self, fault: str, probability: float, method: str | None = None) -> None:
        with self._lock:
            self.random_faults.append((fault, probability, method))

    def release(self) -> None:
        """Let a held reply finish."""
        self._release.set()

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
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            for index, (wanted_method, path_part, fault) in enumerate(self.targeted):
                if method == wanted_method and path_part in path:
                    del self.targeted[index]
                    return fault
            if self.faults:
                return self.faults.popleft()
            if self.passed_limit is not None and self.requests > self.passed_limit:
                return "403"
            for fault, probability, wanted_method in self.random_faults:
                if wanted_method in (None, method) and self._random.random() < probability:
                    self.injected[fault] = self.injected.get(fault, 0) + 1
                    return fault
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
                fault = proxy._next_fault(self.command, self.path)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault in _ERRORS:
                    self._send_error(fault)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                headers["Content-Length"] = str(len(body))
                if self.command == "POST":  # CompleteMultipartUpload names its parts by the ETags they were given
                    body = proxy._real_etags_in(body)
                if fault == "drop-last-part":  # CompleteMultipartUpload assembles the object without its last part
                    body = re.sub(rb"<Part>(?:(?!<Part>).)*</Part>\s*(?=</CompleteMultipartUpload>)", b"", body,
                                  flags=re.S)
                    headers["Content-Length"] = str(len(body))
                if "If-Match" in headers:
                    headers["If-Match"] = proxy._real_etags_in(headers["If-Match"].encode()).decode()
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    payload = reply.read()
                finally:
                    upstream.close()
                if fault == "applied-drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                reply_headers = reply.getheaders()
                if proxy.encrypted:
                    reply_headers, payload = proxy._encrypted_reply(reply_headers, payload)
                if fault == "corrupt" and payload:
                    payload = bytes([payload[0] ^ 0xFF]) + payload[1:]
                self.send_response(reply.status)
                length = reply.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(payload))
                for name, value in reply_headers:
                    if name.lower() not in {"transfer-encoding", "content-length", "connection", "date", "server"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", length)
                self.end_headers()
                if fault == "hold":
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    proxy.held.set()
                    proxy._release.wait()
                    payload = payload[len(payload) // 2:]
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

    def _real_etags_in(self, data: bytes) -> bytes:
        for fake, real in self._real_etags.items():
            data = data.replace(fake.encode(), real.encode())
        return data

    def _encrypted_reply(self, headers: list[tuple[str, str]], payload: bytes) -> tuple[list[tuple[str, str]], bytes]:
        """The reply as SSE-KMS gives it: each ETag replaced by one that is not the content's MD5."""
        def opaque(etag: str) -> str:
            fake = hashlib.sha256(etag.encode()).hexdigest()[:32] + (etag[32:] if "-" in etag else "")
            self._real_etags[fake] = etag
            return fake

        headers = [(name, f'"{opaque(value.strip(chr(34)))}"' if name.lower() == "etag" else value)
                   for name, value in headers] + [("x-amz-server-side-encryption", "aws:kms")]
        payload = re.sub(rb"(<ETag>(?:&quot;|&#34;|\")?)([0-9a-f]{32}(?:-[0-9]+)?)",
                         lambda m: m.group(1) + opaque(m.group(2).decode()).encode(), payload)
        return headers, payload
