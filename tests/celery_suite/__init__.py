"""Celery 5.7.0's own integration tests, run against cloudworker (``make celery-suite``)."""
