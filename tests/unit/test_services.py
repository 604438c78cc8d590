"""Per-process wiring: a forked child builds its own clients and response queue."""

from __future__ import annotations

import os

from cloudworker.objectstore import MemoryObjectStore
from cloudworker.queues import MemoryQueueService
from cloudworker.services import Services
from cloudworker.settings import Settings

SETTINGS = Settings(queue_prefix="t-")


def test_a_forked_child_gets_its_own_mailbox_and_never_deletes_the_parents() -> None:
    made: list[MemoryQueueService] = []

    def queues() -> MemoryQueueService:
        made.append(MemoryQueueService())
        return made[-1]

    services = Services(SETTINGS, store=MemoryObjectStore, queues=queues)
    parent_mailbox = services.mailbox
    parent_mailbox.open()  # the queue a waiting client has
    parent_mailbox.expect("task-1")
    assert parent_mailbox.url is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave at once
        try:
            child_mailbox = services.mailbox
            verdict = (
                child_mailbox is not parent_mailbox
                and child_mailbox.name != parent_mailbox.name
                and parent_mailbox.url is None  # disowned: its close() deletes nothing
                and not child_mailbox.sent("task-1")
                and services.queues() is not made[0]
            )
            os.write(write, b"ok" if verdict else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    # The parent's own state is untouched.
    assert services.mailbox is parent_mailbox
    assert parent_mailbox.url is not None
    assert parent_mailbox.sent("task-1")
