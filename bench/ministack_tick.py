"""ministack with the long poll of its SQS checking for messages every few ms, not 100 ms.

ministack answers a ``ReceiveMessage`` long poll by checking the queue, then sleeping
``min(0.1, time left)`` seconds, in a loop (``ministack/services/sqs.py``,
``_act_receive_message``): a message sent to a queue someone is long-polling waits up to
100 ms (50 ms on average) before the poll returns it. SQS returns it at once. A cloudworker
round trip has two such hand-offs (the task to the worker's poll, the notice to the client's),
so on plain ministack they add about 100 ms to every round trip and bound throughput: a
quick run measured a round trip p50 of 244 ms with no latency model, its times clustered
at multiples of 100 ms. That is the emulator, not the system measured, so the benchmarks run
ministack through this module, which shortens that one sleep to ``BENCH_MINISTACK_TICK``
seconds (default 0.005) and changes nothing else. The modelled latency of a hand-off is
added by the proxy (:mod:`bench.latency`), as for any other request.

It runs in ministack's own virtual environment (``bench/ministack-tick`` starts it there),
so it imports nothing of this project.
"""

from __future__ import annotations

import asyncio
import os
import sys
import types
from typing import Any

from ministack.app import main
from ministack.services import sqs

TICK = float(os.environ.get("BENCH_MINISTACK_TICK", "0.005"))


class _Asyncio(types.ModuleType):
    """The ``asyncio`` that ``ministack.services.sqs`` sees: the real one, shorter sleeps."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        return await asyncio.sleep(min(delay, TICK), result)


sqs.asyncio = _Asyncio("asyncio")

if __name__ == "__main__":
    sys.exit(main())
