"""The worker's Celery components, in one room as Celery's own ``celery/worker/``.

:mod:`.admission` is the tasks' ``Strategy`` (what a message must be before the
pool takes it), :mod:`.consumer` the worker's ``Consumer`` (refusals to the
dead-letter queue), and the bootsteps: :mod:`.visibility` (held messages kept
hidden), :mod:`.shutdown` (a grace period, then a hand-back), :mod:`.reaper`
(abandoned queues deleted) and :mod:`.revocations` (revocations kept in S3).
"""
