"""Results: stored in S3, pushed to the caller's response queue, waited for, joined.

The storing and the waiting side of one concept, as dramatiq's ``results/`` and
Celery's ``rpc`` backend keep them together: :mod:`.backend` (the result
backend Celery loads), :mod:`.mailbox` (the response queue: the notice, the
worker's ``Notifier`` and the client's ``Mailbox``), :mod:`.finishing` (a
success stored from a thread of its pool process), :mod:`.progress` (running
states, throttled) and :mod:`.chords` (chords joined in S3, no polling).
"""
