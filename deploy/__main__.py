"""``python -m deploy``: run the local stack or the provisioning step.

python -m deploy local up [--workers N] [--concurrency N] [--app MODULE]
python -m deploy local down
python -m deploy local running      # exit 0 if the local endpoint is running
python -m deploy provision [--queue NAME ...]   # against the environment's endpoint/credentials
python -m deploy aws up|status|env|down|render   # the stack on AWS (deploy/aws/README.md)
python -m deploy schedules --app MODULE --role-arn ARN [--remove]   # beat_schedule, no beat
"""

from __future__ import annotations

import argparse
import sys

from cloudworker.settings import load as load_settings
from deploy import local, schedules
from deploy.aws import cli as aws_cli
from deploy.endpoints import ENDPOINT_VARIABLE
from deploy.provision import ProvisioningConflict, provision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    local_parser = commands.add_parser("local", help="the local stack")
    local_parser.add_argument("action", choices=["up", "down", "running"])
    local_parser.add_argument("--workers", type=int, default=1)
    local_parser.add_argument("--concurrency", type=int, default=2)
    local_parser.add_argument(
        "--app",
        default=None,
        help="module of your own Celery app the workers run (celery -A MODULE), "
        "from the current directory (default: the reference app, tasks)",
    )
    provision_parser = commands.add_parser(
        "provision", help="create or update the queues and the bucket"
    )
    provision_parser.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME",
        help="another task queue (without the prefix; NAME.fifo for a FIFO queue), "
        "with its dead-letter queue; repeat for more",
    )
    aws_cli.add_parser(commands)
    schedules.add_arguments(
        commands.add_parser(
            "schedules", help="the app's beat_schedule as EventBridge Scheduler schedules"
        )
    )
    args = parser.parse_args(argv)

    if args.command == "aws":
        return aws_cli.run(args)
    if args.command == "schedules":
        return schedules.run(args)

    if args.command == "provision":
        from cloudworker import aws  # the boto3 client factory with timeouts

        settings = load_settings()
        try:
            done = provision(
                settings,
                sqs=aws.client("sqs", settings),
                s3=aws.client("s3", settings),
                kms=aws.client("kms", settings),
                queues=args.queue,
            )
        except ProvisioningConflict as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(
            f"bucket {done.bucket}\ntask queue {done.task_queue_url}\n"
            f"dead-letter queue {done.dead_letter_queue_url}"
        )
        return 0
    if args.action == "up":
        env = local.up(workers=args.workers, concurrency=args.concurrency, app=args.app)
        print(
            f"local stack up: endpoint {env['AWS_ENDPOINT_URL']} ({env[ENDPOINT_VARIABLE]}), "
            f"bucket {env['CLOUDWORKER_BUCKET']}, Flower {env['CLOUDWORKER_FLOWER_URL']} "
            "(user and password in .run/env); environment in .run/env"
        )
        return 0
    if args.action == "running":
        return 0 if local.default_stack().pid(local.ENDPOINT_PROCESS) is not None else 1
    stopped = local.down()
    print("local stack down" + (f": stopped {', '.join(stopped)}" if stopped else " (nothing ran)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
