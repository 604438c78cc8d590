"""Benchmarks of cloudworker against stock Celery on SQS + S3 (``python -m bench``)."""
