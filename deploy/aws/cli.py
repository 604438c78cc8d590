"""The ``aws`` subcommand of ``python -m deploy``: argument parsing only.

python -m deploy aws up --admin-cidr CIDR [--version REV] [options]   # create or update
                        [--queue NAME]...                               # more task queues
python -m deploy aws status                                             # status, workers, queues
python -m deploy aws env [--env-file .run/aws.env]                      # the client's env file
python -m deploy aws down [--empty-bucket]                              # delete it all
python -m deploy aws render [--check]                                   # template's user data

Common options: --stack-name (default cloudworker), --region (default
CLOUDWORKER_REGION, AWS_REGION, AWS_DEFAULT_REGION, the profile's, us-east-1).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Add ``aws`` and its actions to ``python -m deploy``'s subcommands."""
    aws = commands.add_parser(
        "aws",
        help="the stack on AWS (CloudFormation)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = aws.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack-name", default="cloudworker", help="default: cloudworker")
    common.add_argument("--region", help="the stack's region")
    common.add_argument(
        "--poll", type=float, default=5.0, help="seconds between progress polls (default 5)"
    )
    env_file = argparse.ArgumentParser(add_help=False)
    env_file.add_argument(
        "--env-file", type=Path, default=Path(".run/aws.env"), help="default: .run/aws.env"
    )

    up = actions.add_parser(
        "up", parents=[common, env_file], help="create or update the stack and wait"
    )
    up.add_argument(
        "--version", dest="revision", default="HEAD", help="Git revision to deploy (HEAD)"
    )
    up.add_argument("--prefix", help="queue, topic and bucket prefix (default: <stack name>-)")
    up.add_argument("--admin-cidr", help="addresses allowed to reach Flower (needed to create)")
    up.add_argument("--instance-type", help="worker instance type (t3.small)")
    up.add_argument("--min-workers", type=int, help="fewest workers (1)")
    up.add_argument("--max-workers", type=int, help="most workers (4)")
    up.add_argument("--target-backlog", type=int, help="task messages per worker aimed at (100)")
    up.add_argument("--flower-user", help="Flower's user name (admin)")
    up.add_argument("--flower-instance-type", help="Flower's instance type (t3.micro)")
    up.add_argument("--result-expiry-days", type=int, help="days results are kept (7)")
    up.add_argument("--vpc", help="VPC id (default: the default VPC)")
    up.add_argument("--subnets", help="comma-separated subnet ids (default: the VPC's default)")
    up.add_argument(
        "--image-parameter",
        help="SSM parameter naming the AMI (default: Debian 12 amd64's public parameter; "
        "e.g. /aws/service/debian/release/12/latest/arm64 for Graviton instance types)",
    )
    up.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="NAME",
        help="a task queue beside tasks, made with its dead-letter queue, alarms and scaling "
        "(repeat, or comma-separated; NAME.fifo for FIFO; default: the stack's; "
        "--queue tasks alone removes the others)",
    )
    up.add_argument("--template", type=Path, help="another template (default: the project's)")
    actions.add_parser("status", parents=[common], help="status, workers, queue depths, outputs")
    actions.add_parser("env", parents=[common, env_file], help="write the client's env file")
    down = actions.add_parser("down", parents=[common], help="delete the stack and its leftovers")
    down.add_argument(
        "--empty-bucket",
        action="store_true",
        help="also delete the bucket's data (results, payloads, images); without it, "
        "a bucket holding any stops the deletion",
    )
    render = actions.add_parser("render", help="rewrite the template's generated user data")
    render.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the template is stale"
    )


def run(args: argparse.Namespace) -> int:
    """Run the ``aws`` action ``args`` names; print a one-line error on failure."""
    from botocore.exceptions import BotoCoreError, ClientError

    from deploy.aws import commands, render
    from deploy.aws.release import ReleaseError
    from deploy.aws.stack import StackError

    if args.action == "render":
        try:
            changed = render.render(check=args.check)
        except render.StaleTemplate as exc:
            print(f"error: {exc}")
            return 1
        print("template rendered" if changed else "template is current")
        return 0
    d = commands.Deployment(stack_name=args.stack_name, region=_region(args.region), poll=args.poll)
    try:
        if args.action == "up":
            return commands.up(d, _up_options(args))
        if args.action == "status":
            return commands.status(d)
        if args.action == "env":
            return commands.env(d, args.env_file)
        return commands.down(d, commands.DownOptions(empty_bucket=args.empty_bucket))
    except (commands.CommandError, StackError, ReleaseError) as exc:
        d.note(f"error: {exc}")
    except (ClientError, BotoCoreError) as exc:
        d.note(f"error: AWS refused: {exc}")
    return 1


def _up_options(args: argparse.Namespace) -> Any:
    from deploy.aws import commands

    extra: dict[str, Any] = {}
    if args.template is not None:
        extra["template"] = args.template
    return commands.UpOptions(
        revision=args.revision,
        prefix=args.prefix,
        instance_type=args.instance_type,
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        target_backlog=args.target_backlog,
        admin_cidr=args.admin_cidr,
        flower_user=args.flower_user,
        flower_instance_type=args.flower_instance_type,
        result_expiry_days=args.result_expiry_days,
        vpc=args.vpc,
        subnets=tuple(s for s in args.subnets.split(",") if s) if args.subnets else None,
        image_parameter=args.image_parameter,
        queues=tuple(args.queues) if args.queues else None,
        env_file=args.env_file,
        **extra,
    )


def _region(given: str | None) -> str:
    if given:
        return given
    for name in ("CLOUDWORKER_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(name):
            return os.environ[name]
    import boto3

    return boto3.session.Session().region_name or "us-east-1"
