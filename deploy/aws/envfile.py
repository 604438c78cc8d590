"""The laptop's environment file for a stack on AWS: ``.run/aws.env`` by default.

The same format as the local stack's ``.run/env`` (``export NAME=value`` lines,
read by ``. .run/aws.env`` and by :meth:`deploy.local.Stack.read_env`), built
from the stack's outputs. It carries no credentials: on a laptop boto3 finds
the user's own profile or environment, so only ``AWS_PROFILE`` (if set) and a
non-default ``AWS_ENDPOINT_URL`` (if the command used one) are passed on.
Flower's password is not in it either: the file says how to read it from SSM.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DEFAULT_PATH", "environment", "write"]

DEFAULT_PATH = Path(".run") / "aws.env"

#: Environment variable: stack output.
FROM_OUTPUTS = {
    "CLOUDWORKER_REGION": "Region",
    "CLOUDWORKER_QUEUE_PREFIX": "QueuePrefix",
    "CLOUDWORKER_TASK_QUEUE": "TaskQueue",
    "CLOUDWORKER_BUCKET": "Bucket",
    "CLOUDWORKER_VISIBILITY_TIMEOUT": "VisibilityTimeout",
    "CLOUDWORKER_RESULT_EXPIRY_DAYS": "ResultExpiryDays",
    "CLOUDWORKER_FLOWER_URL": "FlowerUrl",
    "CLOUDWORKER_FLOWER_USER": "FlowerUser",
    "CLOUDWORKER_FLOWER_PASSWORD_PARAMETER": "FlowerPasswordParameter",
}
#: Environment variable: stack output that exists only when its parameter is set.
FROM_OPTIONAL_OUTPUTS = {
    "CLOUDWORKER_S3_PREFIX": "KeyPrefix",
    "CLOUDWORKER_KMS_KEY": "KmsKeyArn",
}


def environment(
    outputs: Mapping[str, str], *, passthrough: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables a client needs, from the stack's ``outputs``.

    ``passthrough`` adds ``AWS_PROFILE`` and ``AWS_ENDPOINT_URL`` from it when set;
    nothing else of it, and never a key.
    """
    missing = [key for key in FROM_OUTPUTS.values() if key not in outputs]
    if missing:
        raise KeyError(f"the stack has no output {', '.join(missing)}")
    env = {name: outputs[key] for name, key in FROM_OUTPUTS.items()}
    env.update(
        {name: outputs[key] for name, key in FROM_OPTIONAL_OUTPUTS.items() if outputs.get(key)}
    )
    env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = outputs["Region"]
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        value = (passthrough or {}).get(name)
        if value:
            env[name] = value
    return env


def write(path: Path, env: Mapping[str, str], *, stack_name: str) -> None:
    """Write ``env`` to ``path`` as ``export`` lines, with a header saying what it is."""
    parameter = env.get("CLOUDWORKER_FLOWER_PASSWORD_PARAMETER", "")
    lines = [
        f"# The cloudworker stack {stack_name} on AWS (python -m deploy aws env).",
        f"# `. {path}` to use it. No credentials here: boto3 uses your own profile or",
        "# environment. Flower's password is in SSM, read it with:",
        f"#   aws ssm get-parameter --name {parameter} --with-decryption \\",
        "#     --query Parameter.Value --output text",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
