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

With ``latency=`` (a :class:`bench.latency.Model`), every forwarded request is also delayed
by that model's latency for its operation, so the loopback endpoint costs what in-region
AWS would (issue #12):

    with FaultProxy(endpoint, latency=latency.from_env()) as proxy:
        ...
        proxy.timings()["sqs:SendMessage"].modelled   # seconds of latency added

Where the delay goes: half of the drawn latency, plus the request body's transfer time,
before the request is forwarded; the other half, plus the response body's transfer time,
after the answer came back. Never while the upstream is working on it: a ``ReceiveMessage``
long poll answered by the endpoint 3 s in, when a message arrived, reaches the client one
modelled latency after that, not later, just as SQS answers a long poll as soon as a message
is there. The before/after split stands for the request's way in and the answer's way out: a
message sent to a receiver already waiting is handed over in about half a send plus half a
receive.

One upstream connection per client connection (each has its own handler thread), kept
alive and opened again when the endpoint drops it, so the proxy costs no TCP handshake per
request; concurrent requests are delayed concurrently, since no lock is held while a
handler sleeps.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import random
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench import latency as latency_model

FAULTS = ("503", "500", "400", "reset", "delay", "cut")
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
#: What a kept-alive upstream connection the endpoint has closed meanwhile raises on reuse.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
#: How the handlers sleep; a module attribute so that a test can watch the sleeps.
_sleep = time.sleep


@dataclasses.dataclass
class Timing:
    """Where the forwarded requests of one operation spent their time, in seconds (sums)."""

    requests: int = 0
    #: Latency the model asked for (service-time draws plus transfer terms).
    modelled: float = 0.0
    #: Time the handlers measured asleep for it (>= ``modelled``, give or take the clock).
    slept: float = 0.0
    #: Time waiting for the endpoint's answer (a long poll's wait is here, not above).
    upstream: float = 0.0


class FaultProxy:
    """A proxy whose faults the test sets; counts requests and faults injected.

    ``latency``: a :class:`bench.latency.Model` whose latency is added to every forwarded
    request (default: none). ``seed`` seeds both the fault and the latency draws.
    """

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        latency: latency_model.Model = latency_model.NONE,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.latency = latency
        self._fault: str | None = None
        self._rate = 1.0
        self._delay = 0.0
        self._operations: frozenset[str] | None = None
        self._code = "InvalidParameterValue"
        self._once = False
        #: Operations the current fault has hit (with ``once_per_operation``, never again).
        self.hit: set[str] = set()
        self._random = random.Random(seed)
        self._latency_random = random.Random(seed)  # its own stream: faults draw as before
        self._lock = threading.Lock()
        self.requests = 0
        self.injected = 0
        #: Connections opened to the endpoint (one per client connection when all is well).
        self.upstream_connects = 0
        #: Requests seen, by ``service:Operation`` (``sqs:ReceiveMessage``, ``sns:Publish``...;
        #: S3 listings as ``s3:LIST``, see :func:`bench.latency.operation_name`).
        self.operations: Counter[str] = Counter()
        self._timings: dict[str, Timing] = {}
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

    def fault(
        self,
        kind: str | None,
        *,
        rate: float = 1.0,
        delay: float = 3.0,
        operations: Iterable[str] | None = None,
        code: str = "InvalidParameterValue",
        once_per_operation: bool = False,
    ) -> None:
        """Set the fault (one of :data:`FAULTS`) for a share ``rate`` of requests, or clear it.

        ``operations`` (``s3:PUT``, ``sqs:ReceiveMessage``...) limits it to those requests.
        A ``400`` answers with the AWS error ``code`` (``ReceiptHandleIsInvalid``,
        ``AccessDenied``...) in each service's own error format. With
        ``once_per_operation``, only the first request of each operation is hit
        (:attr:`hit` names them); the others go through.
        """
        if kind is not None and kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._fault, self._rate, self._delay = kind, rate, delay
            self._operations = None if operations is None else frozenset(operations)
            self._code, self._once = code, once_per_operation
            self.hit = set()
        self._server.drop_connections()

    def operation_counts(self) -> Counter[str]:
        """A copy of :attr:`operations`, taken under the lock."""
        with self._lock:
            return Counter(self.operations)

    def timings(self) -> dict[str, Timing]:
        """Per operation, the forwarded requests' modelled, slept and upstream time (copies)."""
        with self._lock:
            return {op: dataclasses.replace(t) for op, t in self._timings.items()}

    def _draw(self, operation: str) -> float:
        """One service-time draw for ``operation`` (seconds), under the lock: one RNG."""
        with self._lock:
            return latency_model.service_time(self.latency, operation, self._latency_random)

    def _record(self, operation: str, modelled: float, slept: float, upstream: float) -> None:
        with self._lock:
            timing = self._timings.setdefault(operation, Timing())
            timing.requests += 1
            timing.modelled += modelled
            timing.slept += slept
            timing.upstream += upstream

    def _connect(self) -> http.client.HTTPConnection:
        """A connection to the endpoint; its (re)connects count in :attr:`upstream_connects`."""
        return _Upstream(self, *self.upstream)

    def _connected(self) -> None:
        with self._lock:
            self.upstream_connects += 1

    def _decide(self, operation: str) -> tuple[str | None, float]:
        with self._lock:
            self.requests += 1
            self.operations[operation] += 1
            if self._fault is None or self._random.random() >= self._rate:
                return None, 0.0
            if self._operations is not None and operation not in self._operations:
                return None, 0.0
            if self._once and operation in self.hit:
                return None, 0.0
            self.hit.add(operation)
            self.injected += 1
            return self._fault, self._delay


class _Upstream(http.client.HTTPConnection):
    """An HTTP connection to the endpoint that tells the proxy each time it connects."""

    def __init__(self, proxy: FaultProxy, host: str, port: int) -> None:
        super().__init__(host, port, timeout=60)
        self._proxy = proxy

    def connect(self) -> None:
        super().connect()
        # http.client writes the headers and the body apart: without this, Nagle's algorithm
        # holds the body until the endpoint's delayed ACK (up to 40 ms) for every request.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._proxy._connected()


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
    """One client connection: its requests, in turn, over one kept-alive upstream connection."""

    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY: the answer's headers and body are written apart, and with Nagle's
    #: algorithm the body would wait for the client's delayed ACK (up to 40 ms).
    disable_nagle_algorithm = True
    server: _Server
    _upstream: http.client.HTTPConnection | None

    def setup(self) -> None:
        self._upstream = None
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._close_upstream()

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
        operation = latency_model.operation_name(
            operation_of(self.command, self.headers, body), self.path
        )
        fault, delay = self.server.proxy._decide(operation)
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
        if fault == "400":
            self._answer_error(operation, self.server.proxy._code)
            return
        if fault == "delay":
            time.sleep(delay)
        self._forward(operation, body)

    def _answer_error(self, operation: str, code: str) -> None:
        """A client error ``code`` as the service answers it: SQS's JSON protocol, or XML."""
        service = operation.split(":", 1)[0]
        headers = {"x-amzn-RequestId": "injected"}
        if self.headers.get("X-Amz-Target", "").startswith("AmazonSQS."):
            payload = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": "injected"})
            headers["Content-Type"] = "application/x-amz-json-1.0"
            headers["x-amzn-query-error"] = f"{code};Sender"
        elif service == "s3":
            payload = f"<Error><Code>{code}</Code><Message>injected</Message></Error>"
            headers["Content-Type"] = "application/xml"
        else:  # the query protocol (SNS, and SQS's older one)
            payload = (
                "<ErrorResponse><Error><Type>Sender</Type>"
                f"<Code>{code}</Code><Message>injected</Message></Error>"
                "<RequestId>injected</RequestId></ErrorResponse>"
            )
            headers["Content-Type"] = "text/xml"
        data = payload.encode()
        status = 403 if code == "AccessDenied" and service == "s3" else 400
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self, operation: str, body: bytes) -> None:
        """Forward the request, with the model's latency around (never during) the exchange."""
        proxy = self.server.proxy
        service = proxy._draw(operation)
        before = service / 2 + latency_model.transfer(proxy.latency, len(body))
        slept = _pause(before)
        started = time.monotonic()
        try:
            response, data = self._exchange(body)
        except (OSError, http.client.HTTPException):
            proxy._record(operation, before, slept, time.monotonic() - started)
            _reset(self.connection)
            self.close_connection = True
            return
        waited = time.monotonic() - started
        after = service - service / 2 + latency_model.transfer(proxy.latency, len(data))
        slept += _pause(after)
        proxy._record(operation, before + after, slept, waited)
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _exchange(self, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        """The endpoint's answer, over this handler's kept-alive connection.

        A reused connection the endpoint closed while idle fails on first use; the request
        then goes once more over a new connection. Any other failure is the caller's.
        """
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        while True:
            # http.client reconnects by itself after a response that closed the connection.
            reused = self._upstream is not None and self._upstream.sock is not None
            if self._upstream is None:
                self._upstream = self.server.proxy._connect()
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                return response, response.read()
            except _STALE:
                self._close_upstream()
                if not reused:
                    raise
            except (OSError, http.client.HTTPException):
                self._close_upstream()
                raise

    def _close_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


def _pause(seconds: float) -> float:
    """Sleep ``seconds`` (holding no lock) and return the time measured asleep."""
    if seconds <= 0:
        return 0.0
    started = time.monotonic()
    _sleep(seconds)
    return time.monotonic() - started
