"""celery beat on several hosts at once, each tick sent by one of them: a lease in S3.

Celery's beat sends every tick from every beat process: two of them (an
autoscaled pair, the old and the new host of a rolling deploy) send each
periodic task twice (celery#2856, django-celery-beat#576). :class:`Scheduler`
is Celery's own (``PersistentScheduler``), sending only while its process holds
the app's leader lease, one small S3 object (``beat/<app>.lease.json``) that
names its holder and when the lease ends. The lease is taken and kept with S3's
conditional writes (:class:`Lease`): two processes can never both write the
version they read, so at most one holds an unexpired lease at any time. It is
renewed before every send, so a process that lost it (paused past its end, say)
sends nothing more. The other processes keep their schedules in step without
sending, and one of them takes over within ``CLOUDWORKER_BEAT_LEASE`` seconds of
the leader's stop, without a burst of missed ticks. Its schedule runs at its own
moments, so the lease also records when each task was last sent, and the new
leader skips a tick its predecessor already sent.

An adopted app uses it unless its ``beat_scheduler`` is set (README: "Differences
from Celery"); ``beat_scheduler = "celery.beat:PersistentScheduler"`` gives
Celery's back.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery.beat import PersistentScheduler

from cloudworker.keys import beat_lease_key
from cloudworker.objectstore import ObjectStore

__all__ = ["Lease", "Scheduler"]

log = logging.getLogger(__name__)


class Lease:
    """A lease one holder at a time has: an object naming it and when its lease ends.

    The object also keeps when each periodic task was last sent, by whichever holder
    (``recorded``), so that a holder taking over does not send a task its predecessor
    sent moments before.
    """

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        *,
        holder: str,
        seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._key, self.holder = store, key, holder
        self.seconds, self._clock = seconds, clock
        #: When this holder last took or renewed the lease (its clock), 0.0: never.
        self.renewed = 0.0
        #: When each entry was last sent (epoch seconds), as the lease last said, plus
        #: this holder's own sends since.
        self.recorded: dict[str, float] = {}

    def note_sent(self, name: str) -> None:
        """Record that entry ``name`` was sent now (written with the next renewal)."""
        self.recorded[name] = self._clock()

    def hold(self) -> bool:
        """Take the lease, or renew it if it is this holder's; whether this holder has it.

        Taken when nobody holds it, or its holder's lease has ended; every write
        is conditional on the version read (or on there being none), so of two
        processes trying at once one succeeds.
        """
        now = self._clock()
        found = self._store.read(self._key)
        recorded = dict(self.recorded)
        if found is not None:
            holder, until, theirs = _parse(found[0])
            if holder != self.holder and until > now:
                self.renewed = 0.0
                return False
            for name, sent in theirs.items():
                recorded[name] = max(sent, recorded.get(name, 0.0))
        record = json.dumps(
            {"holder": self.holder, "until": now + self.seconds, "sent": recorded}
        ).encode()
        if found is None:
            held = self._store.put(self._key, record, only_if_absent=True)
        else:
            held = self._store.put(self._key, record, replacing=found[1])
        self.renewed = now if held else 0.0
        if held:
            self.recorded = recorded
        return held

    def release(self) -> None:
        """End this holder's lease at once (a stopping beat), so another takes over now."""
        found = self._store.read(self._key)
        if found is not None and _parse(found[0])[0] == self.holder:
            ended = {"holder": self.holder, "until": 0, "sent": self.recorded}
            self._store.put(self._key, json.dumps(ended).encode(), replacing=found[1])
        self.renewed = 0.0


def _parse(data: bytes) -> tuple[str | None, float, dict[str, float]]:
    try:
        record = json.loads(data)
        sent = {str(k): float(v) for k, v in (record.get("sent") or {}).items()}
        return str(record["holder"]), float(record["until"]), sent
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, 0.0, {}  # unreadable: nobody's, and ended


class Scheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler, sending only while it holds the app's lease."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        services = app.services
        seconds = services.settings.beat_lease
        self.lease = Lease(
            services.store(),
            beat_lease_key(app.main or "beat"),
            holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            seconds=seconds,
        )
        super().__init__(app, *args, **kwargs)
        # Wake often enough to renew the lease well before it ends.
        self.max_interval: float = min(float(self.max_interval), seconds / 3)
        self._leading = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if time.time() - self.lease.renewed > self.lease.seconds / 3:
            self._hold()
        wait = float(super().tick(*args, **kwargs))
        return min(wait, self.max_interval)

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        """Celery's, if this process holds the lease, renewed just before the send.

        A task the lease says was sent since its last due time (by the holder before,
        this one taking over on a schedule of its own) is not sent again.
        """
        if not self._hold():
            log.debug("not the beat leader: %s not sent from here", entry.name)
            return
        last = self.lease.recorded.get(entry.name)
        if last is not None and not entry.schedule.is_due(datetime.fromtimestamp(last, UTC))[0]:
            log.info("%s was sent by the beat before this one: not sent again", entry.name)
            return
        self.lease.note_sent(entry.name)
        super().apply_entry(entry, producer=producer)

    def close(self) -> None:
        if self._leading:
            try:
                self.lease.release()
            except Exception as exc:  # noqa: BLE001 - it ends by itself anyway
                log.warning("could not end the beat lease: %s", exc)
        super().close()

    def _hold(self) -> bool:
        try:
            leading = self.lease.hold()
        except Exception as exc:  # noqa: BLE001 - an S3 fault: send nothing, try again
            log.warning("could not take or renew the beat lease: %s", exc)
            leading = False
        if leading != self._leading:
            log.info(
                "this beat now sends the periodic tasks"
                if leading
                else "another beat process sends the periodic tasks; this one waits"
            )
            self._leading = leading
        return leading
