"""Unit tests of the AWS latency model (bench.latency) and the proxy applying it (#12).

The model: ``none`` adds nothing, draws centre on the configured medians, bodies cost
transfer time, JSON overrides load (and bad ones fail clearly), ``floor`` sums medians, and
S3 listings are named apart from GETs. The proxy: checked against a tiny HTTP server started
here on loopback (not the AWS stack), through the proxy's own accounting rather than
wall-clock timings: the delay it applied, a slow answer not delayed further, upstream
connections kept alive, and concurrent requests asleep at the same time.
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bench import latency
from bench.latency import AWS, NONE, Latency, LatencyConfigError, Model
from tests.support import faultproxy
from tests.support.faultproxy import FaultProxy

OPERATIONS = sorted(AWS.operations)


# --- the model ------------------------------------------------------------------------------


def test_none_adds_nothing() -> None:
    rng = random.Random(1)
    for operation in [*OPERATIONS, "sqs:ListQueues", "?:GET"]:
        assert latency.draw(NONE, operation, rng, request_bytes=12_000_000) == 0
        assert latency.median(NONE, operation, 12_000_000) == 0
    assert latency.floor(OPERATIONS, NONE) == 0


def test_every_named_operation_has_figures() -> None:
    expected = {
        *(
            f"sqs:{name}"
            for name in (
                "SendMessage",
                "SendMessageBatch",
                "ReceiveMessage",
                "DeleteMessage",
                "DeleteMessageBatch",
                "ChangeMessageVisibility",
                "ChangeMessageVisibilityBatch",
                "GetQueueAttributes",
                "GetQueueUrl",
            )
        ),
        "sns:Publish",
        "sns:PublishBatch",
        *(f"s3:{name}" for name in ("PUT", "GET", "HEAD", "DELETE", "POST", "LIST")),
    }
    assert expected <= set(AWS.operations)


@pytest.mark.parametrize("operation", ["sqs:SendMessage", "s3:PUT", "s3:GET", "sns:Publish"])
def test_draws_centre_on_the_median_and_reach_the_p99(operation: str) -> None:
    rng = random.Random(7)
    draws = sorted(latency.service_time(AWS, operation, rng) for _ in range(20_000))
    figures = AWS.operations[operation]
    assert statistics.median(draws) == pytest.approx(figures.median, rel=0.05)
    assert draws[int(0.99 * len(draws))] == pytest.approx(figures.p99, rel=0.15)
    assert min(draws) > 0


def test_draws_repeat_with_the_seed() -> None:
    def run(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [latency.draw(AWS, op, rng, request_bytes=100) for op in OPERATIONS * 3]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_a_fixed_latency_is_exact() -> None:
    fixed = Model("fixed", default=Latency(0.05, 0.05))
    assert latency.service_time(fixed, "sqs:SendMessage", random.Random(0)) == 0.05


def test_bigger_bodies_cost_more() -> None:
    rate = AWS.bytes_per_second
    assert rate is not None
    small = latency.median(AWS, "s3:PUT", 1_000)
    big = latency.median(AWS, "s3:PUT", 12_000_000)
    assert big - small == pytest.approx(11_999_000 / rate)
    assert big > small + 0.1  # 12 MB at ~90 MB/s: over 100 ms more
    # The same draw, once with each body size: only the transfer term differs.
    one = latency.draw(AWS, "s3:PUT", random.Random(5), request_bytes=1_000)
    two = latency.draw(AWS, "s3:GET", random.Random(5), response_bytes=12_000_000)
    assert two > one
    same_draw = latency.draw(AWS, "s3:PUT", random.Random(5), request_bytes=12_000_000)
    assert same_draw - one == pytest.approx(big - small)


def test_unknown_operations_get_the_default() -> None:
    assert latency.latency_of(AWS, "sqs:ListQueues") == AWS.default
    assert AWS.default.median > 0


def test_floor_sums_medians() -> None:
    path = ["sqs:SendMessage", "sqs:ReceiveMessage", "s3:PUT", "sqs:SendMessage"]
    path.append("sqs:ReceiveMessage")
    expected = sum(AWS.operations[op].median for op in path)
    assert latency.floor(path) == pytest.approx(expected)
    assert latency.floor(path) == pytest.approx(0.070)  # 10 + 10 + 30 + 10 + 10 ms
    with_body = latency.floor([("s3:PUT", 12_000_000)])
    assert with_body == pytest.approx(0.030 + 12_000_000 / 90e6)
    assert latency.floor([]) == 0


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/cloudworker?list-type=2&prefix=results%2F", "s3:LIST"),
        ("/cloudworker/?list-type=2", "s3:LIST"),
        ("/?list-type=2&max-keys=10", "s3:LIST"),  # virtual-hosted addressing
        ("/cloudworker/results/abc", "s3:GET"),
        ("/cloudworker/results/abc?list-type=2", "s3:GET"),  # an object, not the bucket
        ("/cloudworker?location", "s3:GET"),
        ("/cloudworker?prefix=x", "s3:GET"),  # ListObjects v1 is not modelled apart
    ],
)
def test_s3_list_is_named_apart_from_get(path: str, name: str) -> None:
    assert latency.operation_name("s3:GET", path) == name


def test_operation_name_leaves_other_operations() -> None:
    assert latency.operation_name("sqs:SendMessage", "/?list-type=2") == "sqs:SendMessage"
    assert latency.operation_name("s3:PUT", "/bucket?list-type=2") == "s3:PUT"


@pytest.mark.parametrize(("median", "p99"), [(0.02, 0.01), (-1.0, 1.0), (0.0, 0.01)])
def test_figures_must_make_sense(median: float, p99: float) -> None:
    with pytest.raises(ValueError):
        Latency(median, p99)


# --- configuration --------------------------------------------------------------------------


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_json_overrides_the_aws_figures(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "bytes_per_second": 50_000_000,
            "operations": {"s3:PUT": {"median_ms": 40, "p99_ms": 200}},
        },
    )
    model = latency.load(path)
    assert model.operations["s3:PUT"] == Latency(0.040, 0.200)
    assert model.operations["sqs:SendMessage"] == AWS.operations["sqs:SendMessage"]
    assert model.default == AWS.default
    assert model.bytes_per_second == 50_000_000
    assert model.name == "profile"


def test_json_can_start_from_none(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "base": "none",
            "name": "only-s3",
            "default": {"median_ms": 1, "p99_ms": 1},
            "operations": {"s3:GET": {"median_ms": 12.5, "p99_ms": 40}},
        },
    )
    model = latency.load(path)
    assert model.name == "only-s3"
    assert set(model.operations) == {"s3:GET"}
    assert model.default == Latency(0.001, 0.001)
    assert model.bytes_per_second is None


def test_the_environment_picks_the_model(tmp_path: Path) -> None:
    path = write(tmp_path, {"operations": {"sns:Publish": {"median_ms": 5, "p99_ms": 9}}})
    assert latency.from_env({}) is NONE
    assert latency.from_env({latency.ENV: ""}) is NONE
    assert latency.from_env({latency.ENV: "none"}) is NONE
    assert latency.from_env({latency.ENV: " aws "}) is AWS
    assert latency.from_env({latency.ENV: str(path)}).operations["sns:Publish"].median == 0.005


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"operation": {}}, "unknown keys ['operation']"),
        ({"base": "azure"}, "unknown latency profile 'azure'"),
        ({"operations": {"s3:PUT": {"median_ms": 40}}}, "operations.s3:PUT"),
        ({"operations": {"s3:PUT": {"median_ms": 40, "p99_ms": 20}}}, "median <= p99"),
        ({"operations": {"s3:PUT": {"median_ms": "40", "p99_ms": 50}}}, "must be numbers"),
        ({"operations": {"PutObject": {"median_ms": 1, "p99_ms": 2}}}, "not service:Operation"),
        ({"operations": []}, "operations: expected an object"),
        ({"bytes_per_second": 0}, "bytes_per_second"),
        ({"bytes_per_second": "fast"}, "bytes_per_second"),
    ],
)
def test_a_bad_file_says_what_is_wrong(tmp_path: Path, content: Any, complaint: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(LatencyConfigError) as raised:
        latency.load(path)
    assert str(path) in str(raised.value)
    assert complaint in str(raised.value)


def test_a_missing_file_or_unknown_profile_says_so(tmp_path: Path) -> None:
    with pytest.raises(LatencyConfigError, match="cannot read latency profile"):
        latency.load(tmp_path / "absent.json")
    with pytest.raises(LatencyConfigError, match=r"CLOUDWORKER_LATENCY='fast'.*none, aws"):
        latency.from_env({latency.ENV: "fast"})


# --- the proxy ------------------------------------------------------------------------------

SLOW_POLL = 0.3
FIXED = Model("fixed-50ms", default=Latency(0.05, 0.05))


class Upstream(BaseHTTPRequestHandler):
    """Answers ``ok``; a ReceiveMessage after SLOW_POLL s (a long poll answered mid-poll);
    ``/drop`` then closes its connection, as an endpoint's idle timeout would."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if b"Action=ReceiveMessage" in body:
            threading.Event().wait(SLOW_POLL)
        payload = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if self.path == "/drop":
            self.close_connection = True

    do_GET = do_POST


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def call(
    connection: http.client.HTTPConnection, action: str, path: str = "/", service: str = "sqs"
) -> bytes:
    """One signed-looking request (operation_of reads the credential scope and Action)."""
    headers = {
        "Authorization": f"AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/{service}/"
        "aws4_request, SignedHeaders=host, Signature=0",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    method = "GET" if service == "s3" else "POST"
    body = None if service == "s3" else f"Action={action}&QueueUrl=q".encode()
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    assert response.status == 200, data
    return data


@contextmanager
def client(proxy: FaultProxy) -> Iterator[http.client.HTTPConnection]:
    """A keep-alive client connection to the proxy."""
    connection = http.client.HTTPConnection(proxy.url.removeprefix("http://"), timeout=30)
    try:
        yield connection
    finally:
        connection.close()


def test_the_proxy_applies_the_modelled_latency(upstream: str) -> None:
    with FaultProxy(upstream, latency=FIXED) as proxy:
        with client(proxy) as connection:
            assert call(connection, "SendMessage") == b"ok"
        timing = proxy.timings()["sqs:SendMessage"]
    assert timing.requests == 1
    assert timing.modelled == pytest.approx(0.05)
    assert timing.slept >= 0.05 - 1e-3  # asleep for it, by the proxy's own clock
    assert proxy.operation_counts() == {"sqs:SendMessage": 1}


def test_a_slow_answer_is_delayed_by_one_latency_only(upstream: str) -> None:
    with FaultProxy(upstream, latency=FIXED) as proxy:
        with client(proxy) as connection:
            call(connection, "ReceiveMessage")
        timing = proxy.timings()["sqs:ReceiveMessage"]
    assert timing.modelled == pytest.approx(0.05)  # one latency, not the poll's wait on top
    assert timing.upstream >= SLOW_POLL - 1e-3  # the wait was the endpoint's ...
    assert timing.slept < timing.upstream  # ... and the proxy did not sleep through it


def test_upstream_connections_are_kept_alive(upstream: str) -> None:
    with FaultProxy(upstream, latency=NONE) as proxy:
        with client(proxy) as connection:
            for _ in range(3):
                call(connection, "SendMessage")
            call(connection, "", "/cloudworker?list-type=2&prefix=results", service="s3")
            assert proxy.upstream_connects == 1
        with client(proxy) as connection:  # a second client connection: its own upstream
            call(connection, "DeleteMessage")
        assert proxy.upstream_connects == 2
        counts = proxy.operation_counts()
        timings = proxy.timings()
    assert counts == {"sqs:SendMessage": 3, "s3:LIST": 1, "sqs:DeleteMessage": 1}
    assert timings["sqs:SendMessage"].requests == 3
    assert all(t.modelled == 0 and t.slept == 0 for t in timings.values())


def test_an_upstream_connection_dropped_while_idle_is_opened_again(upstream: str) -> None:
    with FaultProxy(upstream) as proxy:
        with client(proxy) as connection:
            call(connection, "SendMessage", "/drop")  # the endpoint closes after answering
            call(connection, "SendMessage")  # the kept connection is dead: it reconnects
        assert proxy.upstream_connects == 2
        assert proxy.operation_counts() == {"sqs:SendMessage": 2}


def test_concurrent_requests_are_delayed_concurrently(
    upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each proxy sleep waits for the other request's: only concurrent sleeps get through."""
    barrier = threading.Barrier(2, timeout=10)
    monkeypatch.setattr(faultproxy, "_sleep", lambda seconds: barrier.wait())
    results: list[bytes] = []
    with FaultProxy(upstream, latency=FIXED) as proxy:

        def one() -> None:
            with client(proxy) as connection:
                results.append(call(connection, "SendMessage"))

        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        timing = proxy.timings()["sqs:SendMessage"]
    assert results == [b"ok", b"ok"]
    assert not barrier.broken
    assert timing.requests == 2
    assert timing.modelled == pytest.approx(0.10)
