"""``python -m client``: send work to the workers from a shell.

    python -m client stats FILE [--json] [--timeout SECONDS]
    python -m client grayscale IN [-o OUT] [--timeout SECONDS]
    python -m client reap [--max-age SECONDS]

Exit status: 0 on success; 2 when the input is bad (found here or reported by
the worker), with one line ``error: <reason>`` on stderr; 1 when the
infrastructure fails (no endpoint, a queue not provisioned, a timeout).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

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
        "stats", help="count, mean, median, min and max of a file of integers"
    )
    stats.add_argument("file", type=Path, help="integers separated by whitespace")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    gray = commands.add_parser("grayscale", help="turn an image black-and-white")
    gray.add_argument("input", type=Path, help="the image (JPEG, PNG, WebP, GIF, TIFF, BMP ...)")
    gray.add_argument("-o", "--output", type=Path, help="default: output_image.<extension of IN>")
    for sub in (stats, gray):
        sub.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="seconds to wait for the answer (default: CLOUDWORKER_TIMEOUT, 300)",
        )
    reap = commands.add_parser("reap", help="delete response queues abandoned by crashed clients")
    reap.add_argument(
        "--max-age",
        type=float,
        default=None,
        help="seconds unused before a queue counts as abandoned "
        "(default: CLOUDWORKER_RESPONSE_QUEUE_MAX_AGE)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Exit through Python on SIGTERM, so the response queue is deleted at exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_FAILURE))
    command: Callable[[argparse.Namespace], int] = {
        "stats": _stats, "grayscale": _grayscale, "reap": _reap,
    }[args.command]  # fmt: skip
    try:
        return command(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: one line, a status
        return _report(exc)


def _report(exc: BaseException) -> int:
    from celery.exceptions import TimeoutError as CeleryTimeoutError

    from tasks.errors import InvalidInput

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
    from tasks.errors import InvalidInput

    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror or exc}") from None


def _timeout(args: argparse.Namespace) -> float:
    from config import load

    timeout = args.timeout if args.timeout is not None else load().timeout
    if timeout <= 0:
        from tasks.errors import InvalidInput

        raise InvalidInput("--timeout must be positive")
    return float(timeout)


def _stats(args: argparse.Namespace) -> int:
    from client.numbers import parse_integers
    from tasks import compute_stats

    numbers = parse_integers(_read(args.file), source=str(args.file))
    timeout = _timeout(args)
    stats = compute_stats.delay(numbers).get(timeout=timeout)
    print(render_stats_json(stats) if args.json else render_stats_text(stats))
    return EXIT_OK


STATS_KEYS = ("count", "mean", "median", "min", "max")


def _number(value: Any) -> str:
    """A JSON number, exact for integers and half-integer Decimals of any size."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, Decimal):
        return format(value, "f")
    return repr(value)


def render_stats_json(stats: dict[str, Any]) -> str:
    """One JSON object with the keys count, mean, median, min and max."""
    return "{" + ", ".join(f'"{key}": {_number(stats[key])}' for key in STATS_KEYS) + "}"


def render_stats_text(stats: dict[str, Any]) -> str:
    """The stats as aligned ``name value`` lines."""
    return "\n".join(f"{key:<7}{_number(stats[key])}" for key in STATS_KEYS)


def _grayscale(args: argparse.Namespace) -> int:
    from tasks import grayscale_image
    from tasks.imaging import image_format_for_extension

    source: Path = args.input
    output: Path = args.output or Path(f"output_image{source.suffix or '.jpg'}")
    output_format = image_format_for_extension(output.name)
    data = _read(source)
    timeout = _timeout(args)
    grey = grayscale_image.delay(data, output_format).get(timeout=timeout)
    try:
        output.write_bytes(grey)
    except OSError as exc:
        _say(f"cannot write {output}: {exc.strerror or exc}")
        return EXIT_FAILURE
    print(f"wrote {output} ({len(grey)} bytes)")
    return EXIT_OK


def _reap(args: argparse.Namespace) -> int:
    from tasks import app
    from tasks.reaper import reap

    services = app.services
    reaped = reap(services.queues(), services.settings, max_age=args.max_age)
    print(f"reaped {len(reaped)} response queue(s)")
    for name in reaped:
        print(f"  {name}")
    return EXIT_OK
