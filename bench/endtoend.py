"""The two real tasks end to end through cloudworker: payloads and results through S3.

* ``compute_stats`` on 1,000,000 integers over the whole int64 range (seeded): the client's
  codec checks the ~20 MB JSON list into S3 and sends a reference (:mod:`cloudworker.codec`).
* ``grayscale_image`` on the 12-megapixel photo-like JPEG of the ``grayscale`` benchmark
  (:func:`bench.compute.photo_jpeg`): the image bytes go through S3 the same way, and so
  does the grey JPEG that comes back.

Each is timed from just before ``.delay()`` to ``.get()`` returning, N sequential calls after
one untimed warm-up call, warm client. Next to it: the pure function's own time on the same
input in this process (what the worker must spend at least), the sizes that cross the
network (for the floor of :func:`critical_path`), and the requests the N calls made, by
operation, as the proxies counted them (``--proxy``).

Stock Celery is not run: both inputs are far over SQS's 1 MiB message limit once
JSON/base64-encoded, and stock Celery has no claim-check (``stock-celery-on-sqs.md``,
section 4), so it cannot send them at all.

    python -m bench.endtoend --n 3 --proxy client=URL --proxy worker=URL
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import time
from typing import Any

import numpy as np
from PIL import Image

from bench.client import emit, parse_pairs, progress, proxy_counts, request_delta
from bench.compute import SEED, photo_jpeg
from bench.measure import summarize

__all__ = ["STATS_COUNT", "critical_path", "measure_endtoend"]

STATS_COUNT = 1_000_000
GET_TIMEOUT = 300.0


def critical_path(task: str, input_bytes: int, output_bytes: int = 0) -> list[Any]:
    """The requests of one call that happen one after another, with the bytes each moves.

    From the code (``cloudworker/codec.py``, ``cloudworker/task.py``, ``results/backend.py``,
    ``cloudworker/objectstore.py``) and checked against the proxies' counts per call (``RESULTS.md``
    shows them next to the path): the client checks the input into S3, then sends
    the task; the worker's waiting long poll receives it, reads the input from S3, runs the
    task, deletes the consumed input (``Task.__call__``'s ``finally``, before Celery stores
    the result), writes the result record to S3, then sends the notice that the client's
    waiting long poll receives. For ``grayscale_image`` the grey JPEG is over the inline
    limit, so the worker checks it in (one more PUT before the record) and the client reads
    it back (one more GET).
    """
    path: list[Any] = [
        *_upload(input_bytes),
        "sqs:SendMessage",
        "sqs:ReceiveMessage",
        *_download(input_bytes),
        "s3:DELETE",
    ]
    if task == "grayscale":
        path += _upload(output_bytes)
    # The record's PUT runs beside the notice (cloudworker/results/backend.py): not on the path.
    path += ["sqs:SendMessage", "sqs:ReceiveMessage"]
    if task == "grayscale":
        path += _download(output_bytes)
    return path


def _upload(nbytes: int) -> list[Any]:
    """An S3 upload as ``cloudworker.objectstore`` makes it: one PUT, or a multipart upload.

    Over ``MULTIPART_BYTES`` it is CreateMultipartUpload (POST), the parts (PUTs of up to
    ``MULTIPART_BYTES``, four at a time: for up to four parts the longest is one full part),
    then CompleteMultipartUpload (POST).
    """
    from cloudworker.objectstore import MULTIPART_BYTES

    if nbytes <= MULTIPART_BYTES:
        return [("s3:PUT", nbytes)]
    return ["s3:POST", ("s3:PUT", MULTIPART_BYTES), "s3:POST"]


def _download(nbytes: int) -> list[Any]:
    """An S3 download: one GET, or over ``MULTIPART_BYTES`` a HEAD first (boto3's transfer
    manager asks for the size), then the GET (one, as the proxies counted it here)."""
    from cloudworker.objectstore import MULTIPART_BYTES

    if nbytes <= MULTIPART_BYTES:
        return [("s3:GET", nbytes)]
    return ["s3:HEAD", ("s3:GET", nbytes)]


def _stats_input() -> list[int]:
    rng = np.random.default_rng(SEED)
    info = np.iinfo(np.int64)
    array = rng.integers(info.min, info.max, size=STATS_COUNT, dtype=np.int64, endpoint=True)
    numbers: list[int] = array.tolist()
    return numbers


def measure_endtoend(
    tasks: Any, task: str, n: int, *, proxies: dict[str, str] | None = None, settle: float = 1.0
) -> dict[str, Any]:
    """Time ``n`` sequential calls of ``task`` (``stats`` or ``grayscale``) end to end.

    ``tasks``: cloudworker's :class:`~tasks.definitions.TaskSet`, registered once per process.
    """
    from tasks.compute.imaging import to_grayscale
    from tasks.compute.stats import compute_stats

    proxies = proxies or {}
    if task == "stats":
        numbers = _stats_input()
        argument: Any = numbers
        send = tasks.compute_stats
        input_bytes = len(json.dumps(numbers, separators=(",", ":")))

        def pure() -> Any:
            return compute_stats(numbers)

        def check(value: Any) -> int:
            if value.get("count") != STATS_COUNT or value.get("max") != max(numbers):
                raise AssertionError(f"unexpected result {value!r:.200}")
            return 0

    else:
        image = photo_jpeg()
        argument = image
        send = tasks.grayscale_image
        input_bytes = len(image)

        def pure() -> Any:
            return to_grayscale(image)

        def check(value: Any) -> int:
            grey = Image.open(io.BytesIO(value))
            if grey.mode != "L" or grey.size != (4000, 3000):
                raise AssertionError(f"unexpected image {grey.mode} {grey.size}")
            return len(value)

    gc.collect()
    pure_started = time.perf_counter()
    pure()
    pure_seconds = time.perf_counter() - pure_started
    output_bytes = check(send.delay(argument).get(timeout=GET_TIMEOUT))  # warm-up
    time.sleep(settle if proxies else 0)
    before = proxy_counts(proxies)
    times_ms: list[float] = []
    for _ in range(n):
        gc.collect()
        started = time.perf_counter()
        value = send.delay(argument).get(timeout=GET_TIMEOUT)
        times_ms.append((time.perf_counter() - started) * 1000)
        check(value)
    time.sleep(settle if proxies else 0)
    after = proxy_counts(proxies)
    progress(f"{task}: p50 {summarize(times_ms)['p50']:.0f} ms")
    return {
        "task": task,
        "n": n,
        "input_bytes": input_bytes,
        "output_bytes": output_bytes,
        "pure_seconds": pure_seconds,
        "times_ms": times_ms,
        "requests": {side: request_delta(before[side], after[side]) for side in proxies},
        "critical_path": critical_path(task, input_bytes, output_bytes),
        **summarize(times_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("stats", "grayscale"), action="append")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument(
        "--proxy", action="append", default=[], metavar="SIDE=URL", help="a proxy's control URL"
    )
    args = parser.parse_args()
    proxies = parse_pairs(args.proxy)
    from cloudworker.application import create_app
    from cloudworker.settings import Settings
    from tasks.definitions import register

    app = create_app(Settings.from_env(os.environ))
    try:
        tasks = register(app)
        emit(
            {
                task: measure_endtoend(tasks, task, args.n, proxies=proxies)
                for task in (args.task or ["stats", "grayscale"])
            }
        )
    finally:
        app.services.mailbox.close()


if __name__ == "__main__":
    main()
