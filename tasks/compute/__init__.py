"""The pure computations: statistics of integers, grey images.

They import nothing of Celery, boto3 or the rest of cloudworker except
:mod:`cloudworker.errors`, so the worker, the client, the tests and the benchmarks all
call them directly and get the same answer.
"""
