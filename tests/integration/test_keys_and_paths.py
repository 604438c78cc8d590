"""A deployment under a base prefix of a shared bucket, with a KMS key of the user's.

``CLOUDWORKER_S3_PREFIX`` puts every key cloudworker writes under a base path:
provisioning scopes its lifecycle rules and its inbox notification to it (named
by it, so a second deployment in the same bucket gets rules of its own), and a
worker and a client keep results, claim-checked payloads and the inbox there.
``CLOUDWORKER_KMS_KEY`` encrypts the bucket by default when it has no encryption
of its own, every object cloudworker writes (SSE-KMS) and every queue it creates,
the response queue included. A role given to kombu (``sts_role_arn``) signs
cloudworker's own S3, SQS and SNS requests too. All against the local endpoint,
through a real worker process.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from cloudworker.application import CloudworkerCelery, create_app
from cloudworker.settings import Settings
from deploy import endpoints, local
from tests.integration.conftest import ROOT, LocalStack
from tests.support import buckets
from tests.support.inbox import jpeg, wait_for_object

pytestmark = pytest.mark.integration

PREFIX = "team-a/"


@dataclasses.dataclass
class Deployment:
    bucket: str
    key: str
    env: dict[str, str]
    settings: Settings


def kms_key(stack: LocalStack) -> str:
    """A KMS key of the endpoint's, or a well-formed ARN where it keeps no keys."""
    try:
        return str(stack.client("kms").create_key()["KeyMetadata"]["Arn"])
    except Exception:
        return f"arn:aws:kms:us-east-1:000000000000:key/{uuid.uuid4()}"


def deployment(stack: LocalStack, bucket: str, prefix: str, key: str) -> Deployment:
    env = {
        "CLOUDWORKER_BUCKET": bucket,
        "CLOUDWORKER_QUEUE_PREFIX": f"{bucket}-{prefix.strip('/')}-",
        "CLOUDWORKER_S3_PREFIX": prefix,
        "CLOUDWORKER_KMS_KEY": key,
    }
    return Deployment(bucket, key, env, Settings.from_env({**stack.env, **env}))


def provision(stack: LocalStack, where: Deployment) -> None:
    done = stack.run("-m", "deploy", "provision", env=where.env, timeout=120)
    assert done.returncode == 0, done.stderr


def bucket_state(stack: LocalStack, bucket: str) -> dict[str, Any]:
    return buckets.bucket_state(stack.client("s3"), bucket)


def queue_key(stack: LocalStack, name: str) -> str | None:
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["KmsMasterKeyId"])
    value: str | None = found.get("Attributes", {}).get("KmsMasterKeyId")
    return value


@pytest.fixture(scope="module")
def team_a(local_stack: LocalStack) -> Deployment:
    bucket = f"shared-{uuid.uuid4().hex[:10]}"
    where = deployment(local_stack, bucket, PREFIX, kms_key(local_stack))
    provision(local_stack, where)
    return where


def test_provisioning_scopes_rules_and_inbox_to_the_prefix_and_encrypts_with_the_key(
    stack: LocalStack, team_a: Deployment
) -> None:
    state = bucket_state(stack, team_a.bucket)
    (rule,) = state["encryption"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": team_a.key,
    }
    rules = {r["ID"]: r["Filter"]["Prefix"] for r in state["lifecycle"]}
    assert rules == {
        f"expire-{name}:{PREFIX}": f"{PREFIX}{name}/"
        for name in ("payloads", "results", "groups", "chords", "revoked")
    }
    (inbox,) = state["notifications"]["QueueConfigurations"]
    assert inbox["Id"] == f"cloudworker-inbox:{PREFIX}"
    (prefix_rule,) = inbox["Filter"]["Key"]["FilterRules"]
    assert prefix_rule["Value"] == f"{PREFIX}inbox/"
    settings = team_a.settings
    for name in (
        settings.task_queue_name,
        settings.dead_letter_queue_name,
        settings.inbox_queue_name,
    ):
        assert queue_key(stack, name) == team_a.key, name
    # Again: nothing changes.
    provision(stack, team_a)
    assert bucket_state(stack, team_a.bucket) == state


def test_a_second_deployment_in_the_same_bucket_gets_rules_of_its_own(
    stack: LocalStack, team_a: Deployment
) -> None:
    before = bucket_state(stack, team_a.bucket)
    team_b = deployment(stack, team_a.bucket, "team-b/", team_a.key)
    provision(stack, team_b)
    after = bucket_state(stack, team_a.bucket)
    assert [r for r in after["lifecycle"] if r["ID"].endswith(f":{PREFIX}")] == before["lifecycle"]
    assert {r["Filter"]["Prefix"] for r in after["lifecycle"]} >= {
        "team-b/results/",
        "team-b/payloads/",
    }
    ids = {q["Id"] for q in after["notifications"]["QueueConfigurations"]}
    assert ids == {f"cloudworker-inbox:{PREFIX}", "cloudworker-inbox:team-b/"}


@pytest.fixture(scope="module")
def team_a_worker(local_stack: LocalStack, team_a: Deployment) -> Iterator[CloudworkerCelery]:
    name = "keys-worker"
    env = {
        **os.environ,
        **local_stack.env,
        **team_a.env,
        "CLOUDWORKER_WAIT_SECONDS": "2",
        "PYTHONPATH": str(ROOT),
    }
    offset = local.log_size(local_stack.stack, name)
    local.start_process(local_stack.stack, name, local.worker_command(name, 2), env)
    app = create_app(team_a.settings)
    try:
        local.wait_for_log(local_stack.stack, name, offset, "ready.")
        yield app
    finally:
        app.services.mailbox.close()
        local.stop_process(local_stack.stack, name)


def test_a_worker_keeps_payloads_and_results_under_the_prefix_encrypted_with_the_key(
    stack: LocalStack, team_a: Deployment, team_a_worker: CloudworkerCelery
) -> None:
    numbers = list(range(60_000))  # about 400 KB of JSON: claim-checked through S3
    result = team_a_worker.send_task("tasks.compute_stats", args=[numbers])
    stats = result.get(timeout=60)
    assert (stats["count"], stats["min"], stats["max"]) == (60_000, 0, 59_999)
    s3 = stack.client("s3")
    stored = s3.head_object(Bucket=team_a.bucket, Key=f"{PREFIX}results/{result.id}.json")
    assert stored["ServerSideEncryption"] == "aws:kms"
    assert stored["SSEKMSKeyId"] == team_a.key
    # Nothing of this deployment's is outside its prefix.
    outside = s3.list_objects_v2(Bucket=team_a.bucket).get("Contents", [])
    assert [o["Key"] for o in outside if not o["Key"].startswith(PREFIX)] == []
    # The client's response queue, made for this wait, is encrypted with the key too.
    sqs = stack.client("sqs")
    (response,) = sqs.list_queues(QueueNamePrefix=team_a.settings.response_queue_prefix)[
        "QueueUrls"
    ]
    assert queue_key(stack, response.rsplit("/", 1)[-1]) == team_a.key
    # So are the worker's monitoring receiver queues (remote control, over SNS).
    receivers = sqs.list_queues(QueueNamePrefix=team_a.settings.receiver_queue_prefix)
    names = [url.rsplit("/", 1)[-1] for url in receivers.get("QueueUrls", [])]
    assert names
    assert {name: queue_key(stack, name) for name in names} == dict.fromkeys(names, team_a.key)


def test_an_image_dropped_under_the_prefixs_inbox_comes_out_in_its_outbox(
    stack: LocalStack, team_a: Deployment, team_a_worker: CloudworkerCelery
) -> None:
    s3 = stack.client("s3")
    s3.put_object(Bucket=team_a.bucket, Key=f"{PREFIX}inbox/red.jpg", Body=jpeg((200, 30, 30)))
    grey = wait_for_object(s3, team_a.bucket, f"{PREFIX}outbox/red.jpg", timeout=60)
    assert grey["ServerSideEncryption"] == "aws:kms"
    assert grey["SSEKMSKeyId"] == team_a.key


def test_cloudworkers_own_clients_sign_as_the_role_kombu_is_given(stack: LocalStack) -> None:
    if endpoints.chosen(os.environ).name == "ministack":
        pytest.skip("this endpoint (ministack, its SERVICES) answers no STS AssumeRole")
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    # AssumeRole of moto and ministack does not look the role up (ministack has no IAM).
    role = f"arn:aws:iam::123456789012:role/{name}"
    app = create_app(stack.settings)
    # Given to kombu in Celery's terms, after the app was made, as a user's config is.
    app.conf.broker_transport_options.update(sts_role_arn=role, sts_token_timeout=3600)
    try:
        result = app.send_task("tasks.compute_stats", args=[[3, 1, 2]])
        assert result.get(timeout=60)["median"] == 2
        for service in ("s3", "sqs", "sns"):
            signer = app.services.client(service)._request_signer
            frozen = signer._credentials.get_frozen_credentials()
            identity = boto3.session.Session(
                aws_access_key_id=frozen.access_key,
                aws_secret_access_key=frozen.secret_key,
                aws_session_token=frozen.token,
            ).client(
                "sts",
                endpoint_url=stack.env["AWS_ENDPOINT_URL"],
                region_name=stack.settings.region,
            )
            arn = identity.get_caller_identity()["Arn"]
            assert arn.endswith(f":assumed-role/{name}/cloudworker"), (service, arn)
            # kombu's sts_token_timeout is the role session's length.
            left = (signer._credentials._expiry_time - datetime.now(UTC)).total_seconds()
            assert 3000 < left <= 3600, (service, left)
    finally:
        app.services.mailbox.close()
