"""``python -m client``: send work to the workers from a shell.

    python -m client stats FILE... [--json] [--timeout SECONDS]
    python -m client grayscale IN... [-o OUT] [--timeout SECONDS]
    python -m client reap [--max-age SECONDS]
    python -m client dlq list [--queue NAME] [--limit N] [--json]
    python -m client dlq redrive [--queue NAME] [--limit N]

With one input, ``stats`` prints the statistics (``--json``: exactly one JSON
object) and ``grayscale`` writes OUT (default ``output_image.<extension of
IN>``). With several inputs, or a directory of images, every input is one task,
sent in SQS batches; ``stats --json`` prints one object per line with a
``file`` key, ``grayscale`` writes into the directory OUT (default
``output_images``), a progress bar shows on a terminal, and a summary ends the
run on stderr.

Exit status: 0 on success; 2 when an input is bad (found here or reported by
the worker), with one line ``error: <reason>`` on stderr for each; 1 when the
infrastructure fails (no endpoint, a queue not provisioned, a timeout).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

from client.numbers import int_to_text
from cloudworker.errors import InvalidInput

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m client",
        description="Send work to cloudworker's workers and print or save the answer.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    stats = commands.add_parser(
        "stats", help="count, mean, median, min and max of files of integers"
    )
    stats.add_argument("files", type=Path, nargs="+", help="integers separated by whitespace")
    stats.add_argument("--json", action="store_true", help="print JSON (one object per file)")
    gray = commands.add_parser("grayscale", help="turn images black-and-white")
    gray.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        help="images (JPEG, PNG, WebP, GIF, TIFF, BMP) or directories",
    )
    gray.add_argument(
        "-o",
        "--output",
        type=Path,
        help="one input: the output file (default output_image.<extension of IN>); "
        "several: the output directory (default output_images)",
    )
    for sub in (stats, gray):
        sub.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="seconds to wait for the answer (default: CLOUDWORKER_TIMEOUT, 300)",
        )
    reap = commands.add_parser(
        "reap", help="delete response and monitoring queues abandoned by crashed processes"
    )
    reap.add_argument(
        "--max-age",
        type=float,
        default=None,
        help="seconds unused before a queue counts as abandoned "
        "(default: CLOUDWORKER_RESPONSE_QUEUE_MAX_AGE)",
    )
    dlq = commands.add_parser(
        "dlq", help="the dead-letter queue: messages workers could not process"
    )
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, parser_class=_Parser)
    dlq_list = dlq_commands.add_parser("list", help="show dead letters (they stay in the queue)")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.add_argument("--queue", help="the task queue (default: CLOUDWORKER_TASK_QUEUE)")
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    redrive = dlq_commands.add_parser("redrive", help="send dead letters back to their queue")
    redrive.add_argument("--limit", type=int, default=None)
    redrive.add_argument("--queue", help="the task queue (default: CLOUDWORKER_TASK_QUEUE)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Exit through Python on SIGTERM, so the response queue is deleted at exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_FAILURE))
    command: Callable[[argparse.Namespace], int] = {
        "stats": _stats, "grayscale": _grayscale, "reap": _reap, "dlq": _dlq,
    }[args.command]  # fmt: skip
    try:
        _provisioned_queues_only()
        return command(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: one line, a status
        return _report(exc)


def _report(exc: BaseException) -> int:
    from celery.exceptions import TimeoutError as CeleryTimeoutError

    if isinstance(exc, InvalidInput):
        _say(str(exc))
        return EXIT_BAD_INPUT
    if isinstance(exc, CeleryTimeoutError):
        _say("timed out waiting for the result (is a worker running? see --timeout)")
        return EXIT_FAILURE
    _say(f"{type(exc).__name__}: {exc}")
    return EXIT_FAILURE


def _say(message: str) -> None:
    line = " ".join(str(message).split()) or "unknown error"
    print(f"error: {line}", file=sys.stderr)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror or exc}") from None


def _timeout(args: argparse.Namespace) -> float:
    from cloudworker.settings import load

    timeout = args.timeout if args.timeout is not None else load().timeout
    if timeout <= 0:
        raise InvalidInput("--timeout must be positive")
    return float(timeout)


def _stats(args: argparse.Namespace) -> int:
    from client.bulk import Item, Progress, run
    from client.numbers import parse_integers
    from tasks import compute_stats

    def loader(path: Path) -> Callable[[], tuple[Any, ...]]:
        return lambda: (parse_integers(_read(path), source=str(path)),)

    files: list[Path] = args.files
    items = [Item(str(path), loader(path)) for path in files]
    timeout = _timeout(args)
    report = run(compute_stats, items, timeout=timeout, progress=Progress(len(items)))
    single = len(items) == 1
    for item in report.items:
        if item.error is not None:
            _say(
                item.error
                if single or item.error.startswith(item.label)
                else f"{item.label}: {item.error}"
            )
        elif single:
            print(render_stats_json(item.value) if args.json else render_stats_text(item.value))
        elif args.json:
            print(render_stats_json(item.value, file=item.label))
        else:
            print(f"== {item.label}\n{render_stats_text(item.value)}")
    if not single:
        print(report.summary(), file=sys.stderr)
    return EXIT_BAD_INPUT if report.bad else EXIT_OK


STATS_KEYS = ("count", "mean", "median", "min", "max")


def _number(value: Any) -> str:
    """A JSON number, exact for integers and half-integer Decimals of any size.

    ``repr()`` of an int longer than the int/str conversion limit (4300 digits)
    raises ValueError, so ints go through :func:`client.numbers.int_to_text`;
    ``format(Decimal, "f")`` has no such limit.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int):
        return int_to_text(value)
    return repr(value)


def render_stats_json(stats: dict[str, Any], *, file: str | None = None) -> str:
    """One JSON object with the keys count, mean, median, min and max (``file`` first if given)."""
    fields = [f'"{key}": {_number(stats[key])}' for key in STATS_KEYS]
    if file is not None:
        fields.insert(0, f'"file": {json.dumps(file)}')
    return "{" + ", ".join(fields) + "}"


def render_stats_text(stats: dict[str, Any]) -> str:
    """The stats as aligned ``name value`` lines."""
    return "\n".join(f"{key:<7}{_number(stats[key])}" for key in STATS_KEYS)


def _grayscale(args: argparse.Namespace) -> int:
    from client.bulk import Item, Progress, run
    from tasks import grayscale_image
    from tasks.compute.imaging import image_format_for_extension

    inputs: list[Path] = args.inputs
    pairs = _image_pairs(inputs, args.output)

    def loader(source: Path, target: Path) -> Callable[[], tuple[Any, ...]]:
        return lambda: (_read(source), image_format_for_extension(target.name))

    items = [Item(str(source), loader(source, target)) for source, target in pairs]
    timeout = _timeout(args)
    report = run(grayscale_image, items, timeout=timeout, progress=Progress(len(items)))
    single = len(items) == 1
    unwritten = 0
    for item, (_, target) in zip(report.items, pairs, strict=True):
        if item.error is not None:
            _say(
                item.error if single or item.label in item.error else f"{item.label}: {item.error}"
            )
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.value)
        except OSError as exc:
            _say(f"cannot write {target}: {exc.strerror or exc}")
            unwritten += 1
            continue
        print(f"wrote {target} ({len(item.value)} bytes)")
    if not single:
        print(report.summary(), file=sys.stderr)
    if report.bad:
        return EXIT_BAD_INPUT
    return EXIT_FAILURE if unwritten else EXIT_OK


def _image_pairs(inputs: list[Path], output: Path | None) -> list[tuple[Path, Path]]:
    """(input image, output path) for every image named or found in a named directory."""
    from tasks.compute.imaging import INPUT_EXTENSIONS

    if len(inputs) == 1 and not inputs[0].is_dir() and not (output and output.is_dir()):
        source = inputs[0]
        return [(source, output or Path(f"output_image{source.suffix or '.jpg'}"))]
    outdir = output or Path("output_images")
    pairs: list[tuple[Path, Path]] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in INPUT_EXTENSIONS)
            pairs += [(p, outdir / p.relative_to(path)) for p in found if p.is_file()]
        else:
            pairs.append((path, outdir / path.name))
    if not pairs:
        raise InvalidInput("no images found in " + ", ".join(map(str, inputs)))
    targets = [target.resolve() for _, target in pairs]
    sources = {source.resolve() for source, _ in pairs}
    if len(set(targets)) != len(targets) or sources & set(targets):
        raise InvalidInput(
            f"outputs in {outdir} would collide or overwrite an input: choose another -o"
        )
    return pairs


def _reap(args: argparse.Namespace) -> int:
    from cloudworker.worker.reaper import reap
    from tasks import app

    services = app.services
    reaped = reap(
        services.queues(), services.settings, topics=services.topics(), max_age=args.max_age
    )
    print(f"reaped {len(reaped)} abandoned queue(s)")
    for name in reaped:
        print(f"  {name}")
    return EXIT_OK


def _provisioned_queues_only() -> None:
    """The CLI sends to the deployment's task queue only: a missing one is a misconfiguration
    (a wrong prefix, no provisioning), said at once with exit 1, never created and waited on
    (unless ``CLOUDWORKER_CREATE_QUEUES`` says otherwise)."""
    if "CLOUDWORKER_CREATE_QUEUES" not in os.environ:
        from tasks import app

        app.conf.broker_transport_options["create_queues"] = False


def _dlq(args: argparse.Namespace) -> int:
    from cloudworker.deadletters import peek, redrive
    from tasks import app

    services = app.services
    settings = services.settings
    if args.queue:  # another task queue's dead letters
        settings = dataclasses.replace(settings, task_queue=args.queue)
    if args.dlq_command == "redrive":
        done = redrive(services.queues(), settings, limit=args.limit)
        print(f"sent {done.moved} dead letter(s) back to their queue")
        if done.kept:
            print(f"kept {done.kept} (sent back during this run, or from an unknown queue)")
        return EXIT_OK
    letters = peek(services.queues(), settings, limit=args.limit)
    for letter in letters:
        if args.json:
            print(json.dumps(letter.to_json()))
        else:
            what = f"{letter.task}[{letter.task_id}]" if letter.task else letter.content_type or "?"
            why = f"  because: {letter.reason}" if letter.reason else ""
            print(
                f"{letter.message_id}  from {letter.source}  received {letter.receive_count}x  "
                f"{what}  {letter.preview[:60]}{why}"
            )
    if not args.json:
        print(f"{len(letters)} dead letter(s) in {settings.dead_letter_queue_name}")
    return EXIT_OK
