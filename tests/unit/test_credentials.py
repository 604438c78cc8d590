"""Which credentials cloudworker's own clients sign with: those kombu's transport was given."""

from __future__ import annotations

from cloudworker import aws
from cloudworker.application import create_app
from cloudworker.objectstore import MemoryObjectStore
from cloudworker.queues import MemoryQueueService
from cloudworker.services import Services
from cloudworker.settings import Settings
from cloudworker.topics import MemoryTopicService


def test_none_given_means_boto3s_own_chain() -> None:
    assert aws.Credentials.of_broker("sqs://", {}, "tasks") == aws.Credentials()
    assert aws.Credentials.of_broker(None, {}, "tasks") == aws.Credentials()


def test_the_keys_of_the_broker_url_are_unquoted_as_kombu_reads_them() -> None:
    found = aws.Credentials.of_broker("sqs://AKIAEXAMPLE:se%2Fcr%2Bet@", {}, "tasks")
    assert (found.access_key_id, found.secret_access_key) == ("AKIAEXAMPLE", "se/cr+et")
    assert found.role_arn == ""


def test_the_task_queues_predefined_keys_win_over_the_urls() -> None:
    options = {
        "predefined_queues": {
            "tasks": {"url": "https://q", "access_key_id": "AKIAQUEUE", "secret_access_key": "q"},
            "other": {"url": "https://o", "access_key_id": "AKIAOTHER", "secret_access_key": "o"},
        }
    }
    found = aws.Credentials.of_broker("sqs://AKIAURL:u@", options, "tasks")
    assert (found.access_key_id, found.secret_access_key) == ("AKIAQUEUE", "q")
    # A queue without keys of its own: the URL's, as kombu's Channel.sqs() does.
    bare = {"predefined_queues": {"tasks": {"url": "https://q"}}}
    assert aws.Credentials.of_broker("sqs://AKIAURL:u@", bare, "tasks").access_key_id == "AKIAURL"


def test_a_role_is_taken_with_its_token_timeout() -> None:
    options = {"sts_role_arn": "arn:aws:iam::123456789012:role/jobs", "sts_token_timeout": 3600}
    found = aws.Credentials.of_broker("sqs://", options, "tasks")
    assert (found.role_arn, found.role_seconds) == ("arn:aws:iam::123456789012:role/jobs", 3600)
    assert aws.Credentials.of_broker("sqs://", {"sts_role_arn": "x"}, "tasks").role_seconds == 900


def test_the_secret_never_shows_in_a_repr() -> None:
    found = aws.Credentials.of_broker("sqs://AKIAEXAMPLE:topsecret@", {}, "tasks")
    assert "topsecret" not in repr(found)
    assert "AKIAEXAMPLE" in repr(found)


def test_the_apps_credentials_are_read_from_its_conf_when_a_client_is_made() -> None:
    services = Services(
        Settings(),
        store=MemoryObjectStore,
        queues=MemoryQueueService,
        topics=MemoryTopicService,
    )
    app = create_app(Settings(), services=services)
    assert services.credentials() == aws.Credentials()
    # Set after create_app, as a user's own configuration would be.
    app.conf.broker_url = "sqs://AKIAAPP:s@"
    app.conf.broker_transport_options["sts_role_arn"] = "arn:aws:iam::123456789012:role/app"
    found = services.credentials()
    assert (found.access_key_id, found.role_arn) == (
        "AKIAAPP",
        "arn:aws:iam::123456789012:role/app",
    )
