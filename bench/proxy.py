"""The counting, latency-adding proxy of a benchmark run, in a process of its own.

Every process of the measured system reaches the endpoint through a
:class:`tests.support.faultproxy.FaultProxy`: the workers through one, the benchmark's client
through another, so the AWS requests of a run are counted by operation *at the proxy*, apart
for the client and the workers, whatever the endpoint is (no emulator log is read). With
``latency=`` the proxy adds the modelled in-region AWS latency (:mod:`bench.latency`) to
each request.

Why a process of its own: the proxy is Python, so it costs CPU; in its own process (its own
session, so its own process group) its CPU is measured apart from the endpoint's, the
workers' and the client's, which tells whether the proxy itself bounds a run; and it takes
no GIL from the orchestrator.

The process serves the proxy on one port and a small control API on another::

    GET  /counts          {"url": proxy URL, "operations": {"sqs:SendMessage": 12, ...}, ...}
    PUT  /latency         body: a profile name (none, aws) or a JSON file; switches the model

    python -m bench.proxy --upstream http://127.0.0.1:PORT --control-port C
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench import latency
from deploy import local
from tests.support.faultproxy import FaultProxy

__all__ = ["ProxyProcess", "counts_at", "free_port", "main"]


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def counts_at(control: str, timeout: float = 10.0) -> dict[str, Any]:
    """The proxy's request counts by operation and its timings (``GET /counts``)."""
    with urllib.request.urlopen(f"{control}/counts", timeout=timeout) as answer:
        data: dict[str, Any] = json.loads(answer.read())
        return data


class ProxyProcess:
    """One ``python -m bench.proxy`` process of a :class:`deploy.local.Stack`."""

    def __init__(self, stack: local.Stack, name: str, upstream: str, *, seed: int) -> None:
        self.stack = stack
        self.name = name
        self.upstream = upstream
        self.seed = seed
        self.url = ""
        self.control_port = 0

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def pid(self) -> int | None:
        return self.stack.pid(self.name)

    def start(self, env: dict[str, str], timeout: float = 30.0) -> None:
        """Start the process and wait until its control API answers."""
        self.control_port = free_port()
        command = [
            sys.executable, "-m", "bench.proxy", "--upstream", self.upstream,
            "--control-port", str(self.control_port),
            "--seed", str(self.seed),
        ]  # fmt: skip
        local.start_process(self.stack, self.name, command, env)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.url = self.counts()["url"]
                return
            except OSError:
                if time.monotonic() > deadline or self.pid is None:
                    log = self.stack.log_file(self.name)
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"{self.name} did not start:\n{tail}") from None
                time.sleep(0.1)

    def counts(self) -> dict[str, Any]:
        return counts_at(self.control)

    def set_latency(self, spec: str) -> None:
        """Switch the latency model (``none``, ``aws`` or a JSON file) from now on."""
        request = urllib.request.Request(
            f"{self.control}/latency", data=spec.encode(), method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def stop(self) -> None:
        local.stop_process(self.stack, self.name, grace=5.0)


class _Control(BaseHTTPRequestHandler):
    server: _ControlServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        proxy = self.server.proxy
        if self.path != "/counts":
            self._answer(404, {"error": "not found"})
            return
        self._answer(
            200,
            {
                "url": proxy.url,
                "latency": proxy.latency.name,
                "operations": dict(proxy.operation_counts()),
                "timings": {
                    op: dataclasses.asdict(timing) for op, timing in proxy.timings().items()
                },
                "upstream_connects": proxy.upstream_connects,
            },
        )

    def do_PUT(self) -> None:
        if self.path != "/latency":
            self._answer(404, {"error": "not found"})
            return
        spec = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        try:
            model = latency.from_spec(spec)
        except latency.LatencyConfigError as error:
            self._answer(400, {"error": str(error)})
            return
        self.server.proxy.latency = model
        self._answer(200, {"latency": model.name})


class _ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, proxy: FaultProxy) -> None:
        super().__init__(("127.0.0.1", port), _Control)
        self.proxy = proxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__)
    parser.add_argument("--upstream", required=True, help="the endpoint, http://host:port")
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", default="none", help="none, aws or a JSON file")
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, seed=args.seed, latency=latency.from_spec(args.latency))
    with proxy:
        _ControlServer(args.control_port, proxy).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
