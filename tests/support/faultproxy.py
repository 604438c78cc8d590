"""A fault-injecting HTTP proxy for the local AWS endpoint, on loopback.

Clients point ``AWS_ENDPOINT_URL`` at the proxy; it forwards each request to the
real endpoint, or, while a fault is set, answers it with a 5xx, resets the
connection, delays it, or (``cut``) drops every connection and refuses new
ones, like a network cut. Setting a fault closes the connections that are open,
so clients holding keep-alive connections meet it at once.

    with FaultProxy("http://127.0.0.1:5000") as proxy:
        proxy.fault("503", rate=0.5)      # half the requests answered 503
        proxy.fault("cut")                # nothing gets through
        proxy.fault(None)                 # healthy again
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

FAULTS = ("503", "500", "reset", "delay", "cut")
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    """A proxy whose faults the test sets; counts requests and faults injected."""

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._fault: str | None = None
        self._rate = 1.0
        self._delay = 0.0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.requests = 0
        self.injected = 0
        #: Requests seen, by ``service:Operation`` (``sqs:ReceiveMessage``, ``sns:Publish``...).
        self.operations: Counter[str] = Counter()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()

    def fault(self, kind: str | None, *, rate: float = 1.0, delay: float = 3.0) -> None:
        """Set the fault (one of :data:`FAULTS`) for a share ``rate`` of requests, or clear it."""
        if kind is not None and kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._fault, self._rate, self._delay = kind, rate, delay
        self._server.drop_connections()

    def operation_counts(self) -> Counter[str]:
        """A copy of :attr:`operations`, taken under the lock."""
        with self._lock:
            return Counter(self.operations)

    def _decide(self, operation: str) -> tuple[str | None, float]:
        with self._lock:
            self.requests += 1
            self.operations[operation] += 1
            if self._fault is None or self._random.random() >= self._rate:
                return None, 0.0
            self.injected += 1
            return self._fault, self._delay


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, proxy: FaultProxy) -> None:
        super().__init__(address, handler)
        self.proxy = proxy
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections dropped on purpose are no news."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        with self._open_lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _reset(sock)


def operation_of(method: str, headers: Any, body: bytes) -> str:
    """``service:Operation`` of a signed AWS request, e.g. ``sqs:ReceiveMessage``.

    The service is the one named in the SigV4 credential scope; the operation is
    the JSON protocol's ``X-Amz-Target``, else the query protocol's ``Action``,
    else (S3's REST protocol) the HTTP method.
    """
    scope = _SCOPE.search(headers.get("Authorization", ""))
    service = scope.group(1) if scope else "?"
    target = headers.get("X-Amz-Target", "")
    if target:
        return f"{service}:{target.rpartition('.')[2]}"
    if b"Action=" in body:
        action = parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
        if action:
            return f"{service}:{action}"
    return f"{service}:{method}"


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a dying network or server would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        fault, delay = self.server.proxy._decide(operation_of(self.command, self.headers, body))
        if fault in ("reset", "cut"):
            _reset(self.connection)
            self.close_connection = True
            return
        if fault in ("503", "500"):
            payload = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
            self.send_response(int(fault))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if fault == "delay":
            time.sleep(delay)
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        host, port = self.server.proxy.upstream
        upstream = http.client.HTTPConnection(host, port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except OSError:
            _reset(self.connection)
            self.close_connection = True
            return
        finally:
            upstream.close()
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle
