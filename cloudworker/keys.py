"""The S3 key layout, in one place.

Everything cloudworker writes to its bucket lives under a few prefixes, each with
its own lifecycle rule (``deploy/provision.py``, the CloudFormation template):

* ``payloads/<task id>/<hex>``: a task's large arguments, checked in by the
  client that sent it (:mod:`cloudworker.codec`); deleted once the task consumed them.
  ``payloads/control/<hex>/<hex>``: the large arguments of one remote-control
  broadcast (a revocation of thousands of ids), left to the lifecycle rule, since
  every worker reads them.
* ``results/<task id>.json``: a task's result record (:mod:`cloudworker.results.backend`),
  ``results/<task id>/<hex>`` its large ``bytes``, and ``results/<task id>/state.json``
  its latest state while it runs (:mod:`cloudworker.results.progress`).
* ``revoked/ids/<task id>``: a revoked task id, an empty object whose age in a
  listing is the revocation's; ``revoked/stamped/<sha256>.json``: the headers of a
  revocation by stamped headers (:mod:`cloudworker.worker.revocations`).

* ``groups/<group id>.json``: a saved ``GroupResult`` (a chord's header, in order).
* ``chords/<group id>/...``: the bookkeeping of a chord being joined
  (:mod:`cloudworker.results.chords`).

The task id in a payload's key is what confines a reference: a worker resolves
(and later deletes) only the payloads under its own task's prefix, so a forged
reference cannot make it read or delete a result, an inbox image or another
task's arguments. Task ids are therefore checked (:func:`check_task_id`) before
they become part of a key.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from cloudworker.errors import InvalidMessage

__all__ = [
    "BEAT",
    "CHORDS",
    "CONTROL_PAYLOADS",
    "GROUPS",
    "PAYLOADS",
    "RESULTS",
    "REVOKED",
    "REVOKED_IDS",
    "REVOKED_STAMPED",
    "beat_lease_key",
    "check_task_id",
    "chord_prefix",
    "control_payload_dir",
    "control_payload_prefix",
    "group_key",
    "is_object_key",
    "is_payload_key",
    "result_key",
    "result_payload_prefix",
    "revoked_id_key",
    "revoked_stamped_key",
    "revoked_task_id",
    "state_key",
    "task_payload_prefix",
]

#: Prefix of every claim-checked argument (and of stored messages).
PAYLOADS = "payloads/"
#: Prefix of every result record and of a result's large bytes.
RESULTS = "results/"
#: Prefix of saved group results.
GROUPS = "groups/"
#: Prefix of the bookkeeping of chords being joined.
CHORDS = "chords/"
#: Prefix of every stored revocation: ids under ``ids/``, stamped headers under ``stamped/``.
REVOKED = "revoked/"
#: Prefix of celery beat's leader leases (cloudworker/beat.py).
BEAT = "beat/"
REVOKED_IDS = f"{REVOKED}ids/"
REVOKED_STAMPED = f"{REVOKED}stamped/"

#: What a task id may be: what Celery makes (a UUID) and any id a user picks that
#: can sit in an S3 key and a log line unchanged (no ``/``, space or control byte).
_TASK_ID = re.compile(r"[A-Za-z0-9_.:@+=-]{1,200}")
#: The random part of a payload's key (:func:`uuid.uuid4` ``.hex``).
_OBJECT_NAME = re.compile(r"[0-9a-f]{32}")
#: Prefix of the large arguments of remote-control broadcasts (a task id has no ``/``).
CONTROL_PAYLOADS = f"{PAYLOADS}control/"
_PAYLOAD_KEY = re.compile(
    rf"{PAYLOADS}(?:{_TASK_ID.pattern}/|control/{_OBJECT_NAME.pattern}/)?{_OBJECT_NAME.pattern}"
)
_CONTROL_KEY = re.compile(rf"({CONTROL_PAYLOADS}{_OBJECT_NAME.pattern}/){_OBJECT_NAME.pattern}")


def check_task_id(task_id: object) -> str:
    """``task_id`` if it can name S3 objects; :class:`InvalidMessage` otherwise."""
    if isinstance(task_id, str) and _TASK_ID.fullmatch(task_id):
        return task_id
    raise InvalidMessage(
        f"task id {task_id!r:.80} is not 1 to 200 letters, digits or any of _.:@+=-"
    )


def task_payload_prefix(task_id: str) -> str:
    """Where the client checks in the large arguments of task ``task_id``."""
    return f"{PAYLOADS}{check_task_id(task_id)}/"


def result_key(task_id: str) -> str:
    """The S3 key of a task's result record."""
    return f"{RESULTS}{task_id}.json"


def group_key(group_id: str) -> str:
    """The S3 key of a saved ``GroupResult``."""
    return f"{GROUPS}{check_task_id(group_id)}.json"


def chord_prefix(group_id: str) -> str:
    """Where the bookkeeping of the chord whose header is group ``group_id`` lives."""
    return f"{CHORDS}{check_task_id(group_id)}/"


def state_key(task_id: str) -> str:
    """The S3 key of a running task's latest state (not a payload: not 32 hex digits)."""
    return f"{RESULTS}{task_id}/state.json"


def control_payload_prefix() -> str:
    """A new prefix for the large arguments of one remote-control broadcast."""
    return f"{CONTROL_PAYLOADS}{uuid.uuid4().hex}/"


def control_payload_dir(key: str) -> str | None:
    """The broadcast's prefix a :func:`control_payload_prefix` object is under, else None."""
    found = _CONTROL_KEY.fullmatch(key)
    return found.group(1) if found else None


def result_payload_prefix(task_id: str) -> str:
    """Where the large ``bytes`` of a task's result go."""
    return f"{RESULTS}{task_id}/"


def beat_lease_key(name: str) -> str:
    """The S3 key of the leader lease of the beat processes of app ``name``."""
    return f"{BEAT}{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:200] or 'beat'}.lease.json"


def revoked_id_key(task_id: str) -> str:
    """The S3 key that says task ``task_id`` is revoked."""
    return f"{REVOKED_IDS}{check_task_id(task_id)}"


def revoked_task_id(key: str) -> str | None:
    """The task id a :func:`revoked_id_key` names; ``None`` for any other key."""
    if not key.startswith(REVOKED_IDS):
        return None
    task_id = key[len(REVOKED_IDS) :]
    return task_id if _TASK_ID.fullmatch(task_id) else None


def revoked_stamped_key(document: bytes) -> str:
    """The S3 key of a revocation by stamped headers, named by its content.

    The same headers revoked again land on the same key, which refreshes its age.
    """
    return f"{REVOKED_STAMPED}{hashlib.sha256(document).hexdigest()}.json"


def is_object_key(key: str, prefix: str) -> bool:
    """Whether ``key`` is an object cloudworker checked in directly under ``prefix``."""
    return key.startswith(prefix) and bool(_OBJECT_NAME.fullmatch(key[len(prefix) :]))


def is_payload_key(key: str) -> bool:
    """Whether ``key`` is a checked-in payload of any task (``payloads/[<task id>/]<hex>``)."""
    return bool(_PAYLOAD_KEY.fullmatch(key))
