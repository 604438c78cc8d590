"""The project's settings, Django-style: Celery reads the ``CELERY_`` ones (``namespace="CELERY"``).

cloudworker's own settings are Celery settings too (``CELERY_CLOUDWORKER_*`` here,
``cloudworker_*`` in ``app.conf``); those not set here come from the environment
(``CLOUDWORKER_*``: ``. .run/env`` after ``python -m deploy local up --workers 0``).
"""

CELERY_BROKER_URL = "cloudworker://"
CELERY_RESULT_BACKEND = "cloudworker://"
# A setting of the project's own: it wins over cloudworker's default (here, Celery's own).
CELERY_TASK_TIME_LIMIT = 300
