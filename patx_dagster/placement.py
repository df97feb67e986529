"""Where a step runs: its Celery queue, and the worker that ran it.

Every asset is tagged with the queue its step goes to under the Celery executor: :data:`GPU` for
the steps that want an accelerator (training, evaluation, walk-forward folds), :data:`CPU` for the
rest. Other executors ignore the tag. A worker serves the queues it was started with
(``dagster-celery worker start -q gpu ...``), so a GPU box runs only the ``gpu`` worker.
"""

from __future__ import annotations

import socket
import sys

QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG, without importing it
CPU = {QUEUE_TAG: "cpu"}
GPU = {QUEUE_TAG: "gpu"}
WORKER_KEY = "patx/worker"


def worker_name() -> str:
    """The Celery worker's node name (its ``-n``, e.g. ``gpu1@box``) when this step runs in a
    Celery task, else this machine's host name."""
    celery = sys.modules.get("celery")  # loaded in a worker; never imported for a local run
    task = getattr(celery, "current_task", None) if celery is not None else None
    hostname = getattr(getattr(task, "request", None), "hostname", None)
    return str(hostname) if hostname else socket.gethostname()


def worker_metadata() -> dict[str, str]:
    """``{"patx/worker": ...}`` for a materialization's metadata."""
    return {WORKER_KEY: worker_name()}
