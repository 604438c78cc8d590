"""Fixtures shared by the unit tests: an app on the in-memory store and queues."""

from __future__ import annotations

import pytest

from cloudworker.application import CloudworkerCelery, create_app
from cloudworker.objectstore import MemoryObjectStore
from cloudworker.queues import MemoryQueueService
from cloudworker.services import Services
from cloudworker.settings import Settings


@pytest.fixture
def memory_store() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def memory_app(memory_store: MemoryObjectStore) -> CloudworkerCelery:
    """An app whose S3 and SQS are in memory; running states are held for an hour."""
    queues = MemoryQueueService()
    settings = Settings(state_interval=3600)
    services = Services(settings, store=lambda: memory_store, queues=lambda: queues)
    return create_app(settings, services=services)
