"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the S3 server.

Point `AWS_ENDPOINT_URL` at it. Each request is forwarded unchanged, except that with
probability `rate` it instead gets a 500 InternalError, a 503 SlowDown or a 503
ServiceUnavailable S3 error document, has its connection dropped before any answer, or
has a response body cut off half way. `down = True` fails every request (S3 outage).
`counts` counts requests and faults; `lake_counts` the same for requests whose path has
`/lake/` in it (a lake on S3, written by delta-rs).
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_ERRORS = [
    (500, "InternalError", "We encountered an internal error. Please try again."),
    (503, "SlowDown", "Please reduce your request rate."),
    (503, "ServiceUnavailable", "Service is unable to handle request."),
]
FAULTS = ["500", "SlowDown", "503", "drop", "truncate"]


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.1, seed: int = 0) -> None:
        self.upstream = urlparse(upstream)
        self.rate = rate
        self.down = False
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.lake_counts: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    raw = b""
                    while True:
                        size_line = self.rfile.readline()
                        raw += size_line
                        size = int(size_line.split(b";")[0].strip() or b"0", 16)
                        chunk = self.rfile.read(size + 2) if size else b""
                        raw += chunk
                        if size == 0:
                            # trailers until an empty line
                            while True:
                                trailer = self.rfile.readline()
                                raw += trailer
                                if trailer in (b"\r\n", b"\n", b""):
                                    return raw
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                fault = proxy.choose("/lake/" in self.path)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault in {"500", "SlowDown", "503"}:
                    status, code, message = _ERRORS[["500", "SlowDown", "503"].index(fault)]
                    error = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(
                    self.command,
                    self.path,
                    body=body or None,
                    headers=headers,
                    encode_chunked=False,
                )
                response = upstream.getresponse()
                payload = response.read()
                upstream.close()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(name, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(payload)))
                self.end_headers()
                if fault == "truncate" and self.command == "GET" and len(payload) > 1:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients hang up on dropped connections: expected, not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def choose(self, lake: bool) -> str | None:
        counts = [self.counts, self.lake_counts] if lake else [self.counts]
        with self.lock:
            for count in counts:
                count["requests"] += 1
            if self.down:
                fault = self.rng.choice(["SlowDown", "503", "drop"])
            elif self.rng.random() < self.rate:
                fault = self.rng.choice(FAULTS)
            else:
                return None
            for count in counts:
                count[fault] += 1
            return fault

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
