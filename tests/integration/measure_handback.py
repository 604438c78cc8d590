"""How fast a stopping worker hands its held tasks back: a measurement, not a test.

Not collected by ``make test`` (no ``test_`` prefix); run it on its own, with no
other stack running:

    .venv/bin/python -m pytest tests/integration/measure_handback.py -s -p no:cacheprovider

Five rounds: a worker (``-c 2``, a full prefetch of ten 1.5 s tasks: two running,
eight held) gets SIGTERM on its main process; the time until the eight held
messages are visible in SQS again, and until the worker has exited, are printed
with their medians. A second worker then runs all ten, each exactly once.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LocalStack
from tests.integration.test_shutdown import messages
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

ROUNDS = 5


@pytest.fixture(scope="module")
def fleet(local_stack: LocalStack) -> Iterator[Workers]:
    workers = Workers.on_queue(local_stack, "shutdown", visibility=300, wait_seconds=20)
    yield workers
    workers.close("measured", "finisher")


def test_hand_back_after_sigterm(fleet: Workers, local_stack: LocalStack, tmp_path: Path) -> None:
    held: list[float] = []
    exited: list[float] = []
    for round_ in range(ROUNDS):
        fleet.start("measured", wait_ready=True)
        markers = [tmp_path / f"round{round_}-task{n}" for n in range(10)]
        results = [fleet.slow(1.5, marker) for marker in markers]
        while sum(marker.exists() for marker in markers) < 2:
            time.sleep(0.02)
        pid = fleet.stack.pid("measured")
        assert pid is not None
        began = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        while messages(local_stack)[0] < 8:
            time.sleep(0.02)
        held.append(time.monotonic() - began)
        while fleet.stack.pid("measured") is not None:
            time.sleep(0.05)
        exited.append(time.monotonic() - began)
        fleet.start("finisher", wait_ready=True)
        assert [result.get(timeout=120) for result in results] == [1.5] * 10
        fleet.stop("finisher")
        assert [len(marker.read_text().split()) for marker in markers] == [1] * 10
    print(f"\nheld messages visible after SIGTERM: median {statistics.median(held):.3f} s, {held}")
    print(f"worker exited after SIGTERM: median {statistics.median(exited):.3f} s, {exited}")
