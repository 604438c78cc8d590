"""Benchmarks of cloudworker against stock Celery on SQS + S3 (``python -m bench``)."""

#: The local endpoint the benchmarks run on unless CLOUDWORKER_LOCAL_ENDPOINT says otherwise:
#: ministack keeps its speed as a queue deepens, moto does not (deploy/endpoints.py).
DEFAULT_ENDPOINT = "ministack"
