"""Settings from the environment."""

from __future__ import annotations

import pytest

from cloudworker.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.region == "us-east-1"
    assert settings.task_queue_name == "cloudworker-tasks"
    assert settings.response_queue_prefix == "cloudworker-resp-"


def test_reads_prefixed_variables_and_aws_region() -> None:
    settings = Settings.from_env(
        {
            "AWS_REGION": "eu-west-1",
            "CLOUDWORKER_QUEUE_PREFIX": "dev-",
            "CLOUDWORKER_VISIBILITY_TIMEOUT": "30",
            "CLOUDWORKER_MAX_INTEGERS": "1_000",
            "CLOUDWORKER_TIMEOUT": "2.5",
        }
    )
    assert (settings.region, settings.queue_prefix) == ("eu-west-1", "dev-")
    assert (settings.visibility_timeout, settings.max_integers, settings.timeout) == (30, 1000, 2.5)


def test_cloudworker_region_wins_over_aws_region() -> None:
    env = {"AWS_REGION": "eu-west-1", "CLOUDWORKER_REGION": "ap-south-1"}
    assert Settings.from_env(env).region == "ap-south-1"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CLOUDWORKER_WAIT_SECONDS", "25", "WAIT_SECONDS must be 1 to 20"),
        ("CLOUDWORKER_MAX_PIXELS", "0", "MAX_PIXELS must be positive"),
        ("CLOUDWORKER_VISIBILITY_TIMEOUT", "soon", "is not a int"),
        ("CLOUDWORKER_S3_PREFIX", "team-a", "S3_PREFIX must be empty or end with '/'"),
        ("CLOUDWORKER_S3_PREFIX", "/team-a/", "S3_PREFIX must be empty or end with '/'"),
    ],
)
def test_bad_values_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})


def test_a_base_prefix_and_a_kms_key_are_read() -> None:
    settings = Settings.from_env(
        {"CLOUDWORKER_S3_PREFIX": "team-a/jobs/", "CLOUDWORKER_KMS_KEY": "alias/team-a"}
    )
    assert (settings.s3_prefix, settings.kms_key) == ("team-a/jobs/", "alias/team-a")
    assert (Settings().s3_prefix, Settings().kms_key) == ("", "")
