"""The AWS stack on the local endpoint: deployed, booted, used by a client, deleted.

``python -m deploy aws up`` creates ``deploy/aws/cloudworker.yaml`` with
CloudFormation on the session's moto server, exactly as on AWS. moto creates the
EC2 instances of the stack but runs nothing on them, so this test plays the
instance: it runs the template's user data (rendered with the stack's values,
in a throwaway directory, without the Debian-package and systemd steps), which
fetches the release ``up`` uploaded to the stack's bucket and installs it into
a virtual environment; then it starts the worker with the systemd unit's own
command line and environment files, and verifies the units with
``systemd-analyze verify``. A client configured by the env file ``up`` wrote
then uses the queues and the bucket the stack created. ``down`` deletes it all.

What moto's CloudFormation does not implement (queue and bucket policies,
scaling policies, alarms, the bucket's notification) is checked on the
template itself in ``tests/test_deploy_aws_template.py``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from deploy import local
from deploy.aws import render
from deploy.aws.names import TEMPLATE, password_parameter
from deploy.endpoints import ENDPOINT_VARIABLE, chosen
from tests.integration.conftest import ROOT, LocalStack
from tests.support.inbox import jpeg, wait_for_object

pytestmark = [
    pytest.mark.integration,
    # CloudFormation, EC2, Auto Scaling, IAM and SSM are moto's; the other local
    # endpoint (deploy/endpoints.py) serves SQS, S3 and SNS only.
    pytest.mark.skipif(
        chosen(os.environ).name != "moto",
        reason=f"the AWS stack is deployed on moto's CloudFormation ({ENDPOINT_VARIABLE}=moto)",
    ),
]

STACK = "cwtest"
PREFIX = f"{STACK}-"
#: The stack's queue beside tasks (``up --queue``); a later update adds ``emails``,
#: and with both the template is over CloudFormation's inline limit (sent by URL).
OTHER_QUEUE = "reports.fifo"
#: Where the test's AMI id is published (AWS's own parameters are under /aws/, reserved).
IMAGE_PARAMETER = f"/{STACK}/debian-12-amd64"
DEFAULT_IMAGE_PARAMETER = "/aws/service/debian/release/12/latest/amd64"
T: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())
UNIT_DIR = Path("etc/systemd/system")


@dataclass
class Deployed:
    env: dict[str, str]  # the stack's endpoint and fake keys (what an instance role gives)
    outputs: dict[str, str]
    env_file: Path
    template: Path  # the project's, with the test's AMI parameter
    up: subprocess.CompletedProcess[str]
    user_data: str  # as CloudFormation substitutes it for this stack
    boot_root: Path
    boot: subprocess.CompletedProcess[str]
    worker: local.Stack


def deploy(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m deploy aws ARGS`` with ``env``, from the checkout (it archives HEAD)."""
    return subprocess.run(
        [sys.executable, "-m", "deploy", "aws", *args, "--stack-name", STACK, "--poll", "0.5"],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_env_file(path: Path) -> dict[str, str]:
    """``export NAME=value`` lines, as the shell reads them."""
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            (found[name],) = shlex.split(value)
    return found


def unit_command(root: Path, unit: str) -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart and environment, with its paths under ``root``.

    Reads the installed unit as systemd would: its EnvironmentFile lines, then
    ExecStart with ``${NAME}`` expanded from them and ``%%`` unescaped.
    """
    text = (root / UNIT_DIR / unit).read_text()
    env: dict[str, str] = {}
    command = ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "EnvironmentFile":
            path = root / value.removeprefix("-").lstrip("/")
            if path.exists():
                for entry in path.read_text().splitlines():
                    if entry and not entry.startswith("#"):
                        name, _, setting = entry.partition("=")
                        env[name] = setting
        elif key == "ExecStart":
            command = value
    assert command, f"{unit} has no ExecStart"
    words = [
        re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w).replace("%%", "%")
        for w in shlex.split(command)
    ]
    words[0] = str(root / words[0].lstrip("/"))
    return words, env


@pytest.fixture(scope="module")
def deployed(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    env = {
        name: local_stack.env[name]
        for name in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        )
    }
    # The test plays AWS's part: a public parameter naming a Debian AMI.
    image = local_stack.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    local_stack.client("ssm").put_parameter(
        Name=IMAGE_PARAMETER, Value=image, Type="String", Overwrite=True
    )
    tmp = tmp_path_factory.mktemp("aws")
    env_file = tmp / "aws.env"
    # moto resolves the default of an SSM-typed parameter even when a value is given,
    # and refuses names under /aws/: deploy the template with the test's default.
    template = tmp / "cloudworker.yaml"
    text = TEMPLATE.read_text()
    assert text.count(DEFAULT_IMAGE_PARAMETER) == 1
    template.write_text(text.replace(DEFAULT_IMAGE_PARAMETER, IMAGE_PARAMETER))
    worker = local.Stack(tmp / "run")
    worker.run_dir.mkdir()
    up = deploy(
        env, "up", "--admin-cidr", "203.0.113.7/32", "--min-workers", "1",
        "--image-parameter", IMAGE_PARAMETER, "--template", str(template),
        "--env-file", str(env_file), "--queue", OTHER_QUEUE,
    )  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    found = local_stack.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found["Outputs"]}
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in found["Parameters"]}

    # The instance boots: the user data as CloudFormation substitutes it for this stack.
    boot_root = tmp / "instance"
    user_data = tmp / "user-data"
    user_data.write_text(
        script := render.user_data(
            {
                "AWS::Region": outputs["Region"],
                "AWS::StackName": STACK,
                "NamePrefix": outputs["QueuePrefix"],
                "Bucket": outputs["Bucket"],
                "ResultExpiryDays": outputs["ResultExpiryDays"],
                "FlowerUser": outputs["FlowerUser"],
                "ProjectVersion": outputs["ProjectVersion"],
                "KmsKeyArn": "",
                "KeyPrefix": "",
                "WorkerQueues": parameters["WorkerQueues"],
            }
        )
    )
    boot = subprocess.run(
        ["bash", str(user_data)],
        cwd=tmp,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp),
            **env,
            "CLOUDWORKER_BOOT_ROOT": str(boot_root),
            "CLOUDWORKER_BOOT_SKIP_OS": "1",
            "CLOUDWORKER_BOOT_ROLE": "worker",
            # Debian's python3 with python3-boto3 on an instance; here, this venv's.
            "CLOUDWORKER_BOOT_PYTHON": sys.executable,
        },
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert boot.returncode == 0, boot.stdout + boot.stderr[-5000:]
    command, unit_env = unit_command(boot_root, "cloudworker-worker.service")
    local.start_process(worker, "worker", command, {**os.environ, **unit_env, **env})
    try:
        local.wait_for_log(worker, "worker", 0, local.READY_MARK, timeout=120)
        yield Deployed(env, outputs, env_file, template, up, script, boot_root, boot, worker)
    finally:
        local.stop_process(worker, "worker")
        down = deploy(env, "down", "--empty-bucket")
        assert down.returncode == 0, down.stdout + down.stderr


def test_up_reports_the_outputs_and_writes_the_client_env_file(deployed: Deployed) -> None:
    out = deployed.outputs
    assert out["QueuePrefix"] == PREFIX
    assert out["TaskQueueUrl"].endswith(f"/{PREFIX}tasks")
    assert out["Bucket"].startswith(PREFIX)
    assert out["FlowerPasswordParameter"] == password_parameter(STACK)
    assert out["ProjectVersion"] == subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert f"stack {STACK}: CREATE_COMPLETE" in deployed.up.stdout
    env = read_env_file(deployed.env_file)
    assert env["CLOUDWORKER_QUEUE_PREFIX"] == PREFIX
    assert env["CLOUDWORKER_BUCKET"] == out["Bucket"]
    assert env["CLOUDWORKER_FLOWER_URL"] == out["FlowerUrl"]
    assert env["AWS_ENDPOINT_URL"] == deployed.env["AWS_ENDPOINT_URL"]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)


def test_the_stack_made_the_queues_and_the_dead_letter_redrive(
    stack: LocalStack, deployed: Deployed
) -> None:
    sqs = stack.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=deployed.outputs["TaskQueueUrl"], AttributeNames=["All"]
    )["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(f":{PREFIX}tasks-dlq")
    assert int(attributes["VisibilityTimeout"]) == int(deployed.outputs["VisibilityTimeout"])
    assert int(attributes["ReceiveMessageWaitTimeSeconds"]) == 20
    names = {u.rsplit("/", 1)[-1] for u in sqs.list_queues(QueueNamePrefix=PREFIX)["QueueUrls"]}
    assert {f"{PREFIX}tasks", f"{PREFIX}tasks-dlq", f"{PREFIX}inbox-events"} <= names


def queue_attributes(stack: LocalStack, name: str) -> dict[str, str]:
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName=PREFIX + name)["QueueUrl"]
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def test_up_made_the_other_queue_with_its_dead_letter_queue(
    stack: LocalStack, deployed: Deployed
) -> None:
    """``--queue``: a queue as ``tasks`` is, redriven to a dead-letter queue of its own."""
    attributes = queue_attributes(stack, OTHER_QUEUE)
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": f"arn:aws:sqs:{deployed.outputs['Region']}:123456789012:"
        f"{PREFIX}reports-dlq.fifo",
        "maxReceiveCount": 5,
    }
    assert attributes["FifoQueue"] == "true"
    assert queue_attributes(stack, "reports-dlq.fifo")["FifoQueue"] == "true"
    assert int(attributes["VisibilityTimeout"]) == int(deployed.outputs["VisibilityTimeout"])
    stack_env = (deployed.boot_root / "etc/cloudworker/stack.env").read_text()
    assert f"CLOUDWORKER_WORKER_QUEUES=tasks,{OTHER_QUEUE}\n" in stack_env
    assert "CLOUDWORKER_CREATE_QUEUES=false\n" in stack_env


def test_the_booted_worker_serves_every_queue_of_the_stack(
    deployed: Deployed, tmp_path: Path
) -> None:
    """The worker unit's ``-Q`` names them all: a task routed to each is answered."""
    env = {
        **os.environ,
        **deployed.env,
        **read_env_file(deployed.env_file),
        "PYTHONPATH": str(ROOT),
    }
    script = (
        "import json, sys\n"
        "from tasks import app\n"
        "answers = {q: app.send_task('tasks.compute_stats', args=[[1, 2, n]], queue=q)"
        ".get(timeout=120)['max'] for n, q in enumerate(sys.argv[1:], start=3)}\n"
        "print(json.dumps(answers))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "tasks", OTHER_QUEUE],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"tasks": 3, OTHER_QUEUE: 4}
    log = deployed.worker.log_file("worker").read_text()
    assert f".> {OTHER_QUEUE} " in log  # Celery's banner: the queues the worker consumes


def test_the_instances_get_the_user_data_the_test_booted(
    stack: LocalStack, deployed: Deployed
) -> None:
    """What CloudFormation put in the launch template is what the boot test ran."""
    cfn = stack.client("cloudformation")
    summaries = cfn.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    resources = {r["LogicalResourceId"]: r for r in summaries}
    for name in ("InstanceRole", "InstanceProfile", "LaunchTemplate", "WorkerGroup", "Bucket"):
        assert resources[name]["ResourceStatus"] == "CREATE_COMPLETE", name
    ec2 = stack.client("ec2")
    (version,) = ec2.describe_launch_template_versions(
        LaunchTemplateId=resources["LaunchTemplate"]["PhysicalResourceId"]
    )["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    assert base64.b64decode(data["UserData"]).decode() == deployed.user_data
    assert data["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 only
    group = stack.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[deployed.outputs["WorkerGroup"]]
    )["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"]) == (1, 4)
    role = stack.client("iam").get_role(RoleName=resources["InstanceRole"]["PhysicalResourceId"])
    assert role["Role"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }


def test_the_booted_instance_runs_the_released_version(deployed: Deployed) -> None:
    version = deployed.outputs["ProjectVersion"]
    source = deployed.boot_root / "opt/cloudworker/src" / version
    assert (source / "tasks" / "__init__.py").is_file()
    assert not (source / ".git").exists()  # the release, not a checkout
    assert f"done: version {version}" in deployed.boot.stderr
    assert "skipping step os" in deployed.boot.stderr
    stack_env = (deployed.boot_root / "etc/cloudworker/stack.env").read_text()
    assert f"CLOUDWORKER_BUCKET={deployed.outputs['Bucket']}\n" in stack_env
    assert "SECRET" not in stack_env and "PASSWORD=" not in stack_env
    log = deployed.worker.log_file("worker").read_text()
    assert f"worker@{socket.gethostname()} ready." in log  # the unit's --hostname, expanded
    assert f"SQS queue 'arn:aws:sqs:{deployed.outputs['Region']}:" in log
    assert f":{PREFIX}rx-worker_" in log  # its control queue, under the stack's prefix


def test_a_client_uses_the_stacks_queues_and_bucket(
    stack: LocalStack, deployed: Deployed, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **deployed.env,  # the endpoint and keys: a laptop's own credentials on AWS
        **read_env_file(deployed.env_file),
        "PYTHONPATH": str(ROOT),
    }

    def client(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "client", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    stats = client("stats", str(ROOT / "examples/input.txt"), "--json")
    assert stats.returncode == 0, stats.stderr
    numbers = [int(w) for w in (ROOT / "examples/input.txt").read_text().split()]
    answer = json.loads(stats.stdout)
    assert answer["count"] == len(numbers)
    assert answer["min"] == min(numbers) and answer["max"] == max(numbers)
    grey = client("grayscale", str(ROOT / "examples/image.jpg"), "-o", "grey.png")
    assert grey.returncode == 0, grey.stderr
    assert (tmp_path / "grey.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The results are in the stack's bucket, and it was the stack's worker that ran them.
    keys = stack.client("s3").list_objects_v2(Bucket=deployed.outputs["Bucket"], Prefix="results/")
    assert keys.get("KeyCount", 0) >= 2
    assert "succeeded" in deployed.worker.log_file("worker").read_text()


def test_an_image_dropped_in_the_stacks_inbox_comes_out_grey(
    stack: LocalStack, deployed: Deployed
) -> None:
    """The template's inbox notification, applied as it says (moto's CloudFormation skips it)."""
    bucket = deployed.outputs["Bucket"]
    (rule,) = T["Resources"]["Bucket"]["Properties"]["NotificationConfiguration"][
        "QueueConfigurations"
    ]
    inbox_arn = stack.client("sqs").get_queue_attributes(
        QueueUrl=deployed.outputs["InboxQueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    # The stack's KeyPrefix is its default, "".
    filter_rules = [
        {**r, "Value": r["Value"]["Fn::Sub"].replace("${KeyPrefix}", "")}
        for r in rule["Filter"]["S3Key"]["Rules"]
    ]
    s3 = stack.client("s3")
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": inbox_arn,
                    "Events": [rule["Event"]],
                    "Filter": {"Key": {"FilterRules": filter_rules}},
                }
            ]
        },
    )
    s3.put_object(Bucket=bucket, Key="inbox/aws/red.jpg", Body=jpeg((200, 30, 30)))
    found = wait_for_object(s3, bucket, "outbox/aws/red.jpg", timeout=60)
    image = Image.open(io.BytesIO(found["Body"].read()))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (120, 80))
    assert abs(int(image.getpixel((60, 40))) - 80) <= 3  # type: ignore[arg-type]


def test_status_reports_the_stack_and_its_queues(stack: LocalStack, deployed: Deployed) -> None:
    # The earlier tests' last acknowledgements may still be on their way (batched).
    assert stack.wait_for_depth(f"{PREFIX}tasks", 0)
    status = deploy(deployed.env, "status")
    assert status.returncode == 0, status.stderr
    assert f"stack {STACK}: CREATE_COMPLETE" in status.stdout
    assert f"version {deployed.outputs['ProjectVersion']}" in status.stdout
    assert "task queue: 0 waiting, 0 in flight; dead letters: 0" in status.stdout
    assert f"queue {OTHER_QUEUE}: 0 waiting, 0 in flight; dead letters: 0" in status.stdout
    assert f"password in SSM {password_parameter(STACK)}" in status.stdout


def test_an_update_keeps_the_other_parameters_and_the_flower_password(
    stack: LocalStack, deployed: Deployed
) -> None:
    ssm = stack.client("ssm")

    def password() -> str:
        parameter = ssm.get_parameter(Name=password_parameter(STACK), WithDecryption=True)
        return str(parameter["Parameter"]["Value"])

    before = password()
    assert len(before) >= 32
    up = deploy(deployed.env, "up", "--max-workers", "6", "--template", str(deployed.template))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "updating stack" in up.stderr and "created Flower's password" not in up.stderr
    found = stack.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    assert found["StackStatus"] == "UPDATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found["Outputs"]}
    group = stack.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[outputs["WorkerGroup"]]
    )["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"]) == (1, 6)
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in found["Parameters"]}
    assert parameters["AdminCidr"] == "203.0.113.7/32"  # not given again: kept
    assert parameters["NamePrefix"] == PREFIX
    assert parameters["WorkerQueues"] == f"tasks,{OTHER_QUEUE}"  # no --queue: kept
    assert queue_attributes(stack, OTHER_QUEUE)["FifoQueue"] == "true"
    assert password() == before


def test_an_update_adds_a_queue_and_a_template_over_the_inline_limit_goes_by_url(
    stack: LocalStack, deployed: Deployed
) -> None:
    up = deploy(
        deployed.env, "up", "--queue", f"{OTHER_QUEUE},emails", "--template", str(deployed.template)
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "over CloudFormation's inline limit: sent as s3://" in up.stderr
    found = stack.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    assert found["StackStatus"] == "UPDATE_COMPLETE"
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in found["Parameters"]}
    assert parameters["WorkerQueues"] == f"tasks,{OTHER_QUEUE},emails"
    redrive = json.loads(queue_attributes(stack, "emails")["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(f":{PREFIX}emails-dlq")
    assert queue_attributes(stack, OTHER_QUEUE)["FifoQueue"] == "true"  # kept
    status = deploy(deployed.env, "status")
    assert "queue emails: 0 waiting, 0 in flight; dead letters: 0" in status.stdout


def test_the_installed_units_pass_systemd_analyze_verify(deployed: Deployed) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    root = deployed.boot_root
    # The units refer to systemd's own targets: give the throwaway root a copy of them.
    shutil.copytree(
        "/usr/lib/systemd/system",
        root / "usr/lib/systemd/system",
        symlinks=True,
        dirs_exist_ok=True,
    )
    # The venv's python links to the interpreter it was made from by an absolute path,
    # which systemd resolves inside the root (on an instance: Debian's /usr/bin/python3).
    interpreter = Path(os.path.realpath(root / "opt/cloudworker/venv/bin/python"))
    inside = root / interpreter.relative_to("/")
    inside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(interpreter, inside)

    def verify(*units: str) -> str:
        done = subprocess.run(
            [analyze, "verify", f"--root={root}", *(f"/{UNIT_DIR}/{u}" for u in units)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        return f"exit {done.returncode}\n{done.stdout}{done.stderr}".strip()

    # Warnings (an unknown setting, a bad value) exit 0 too: any output is a failure.
    assert verify("cloudworker-worker.service", "cloudworker-flower.service") == "exit 0"
    worker = (root / UNIT_DIR / "cloudworker-worker.service").read_text()
    broken = root / UNIT_DIR / "cloudworker-broken.service"
    broken.write_text(worker.replace("Restart=on-failure", "Restart=sometimes"))
    assert "restart specifier, ignoring: sometimes" in verify(broken.name)  # it can fail


def test_down_deletes_what_up_made(stack: LocalStack, deployed: Deployed) -> None:
    """Run last in this module: the fixture's own ``down`` then finds nothing to do."""
    local.stop_process(deployed.worker, "worker")
    down = deploy(deployed.env, "down")
    # The bucket holds results: down refuses without --empty-bucket, deleting nothing.
    assert down.returncode == 1
    assert "--empty-bucket" in down.stderr
    cfn = stack.client("cloudformation")
    assert cfn.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"].endswith("COMPLETE")
    down = deploy(deployed.env, "down", "--empty-bucket")
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"stack {STACK} deleted" in down.stdout
    queues = stack.client("sqs").list_queues(QueueNamePrefix=PREFIX).get("QueueUrls", [])
    assert queues == []
    buckets = [b["Name"] for b in stack.client("s3").list_buckets()["Buckets"]]
    assert deployed.outputs["Bucket"] not in buckets
    ssm = stack.client("ssm")
    assert ssm.get_parameters(Names=[password_parameter(STACK)])["Parameters"] == []
