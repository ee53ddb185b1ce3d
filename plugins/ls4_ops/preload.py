"""What the processes that fork Airflow's task processes import before they fork.

Airflow runs each task in a process forked from a long-lived one: a LocalExecutor
worker (itself forked from the scheduler) or a Celery worker's pool process. A
task process then imports what its operator needs, and for ls4's raster and index
tasks that is rasterio (GDAL), numpy, rio-cogeo, SQLAlchemy and boto3: about 1 s
of CPU in every task, more than the work of a small frame. Imported once in the
forking process, the modules are shared, copy-on-write, by every task it forks.

Only modules that import no Airflow code are named: this runs while Airflow is
still reading its own settings.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

# What ls4's task processes import, heaviest first.
TASK_MODULES = (
    "ls4_ops.raster",
    "ls4_ops.tileindex",
    "ls4_ops.footprint",
    "ls4_ops.ledger",
    "ls4_ops.failures",
    "ls4_ops.notify",
    "boto3",
    "botocore.client",
    "psycopg2",
)

# The Airflow commands whose process forks task processes: `airflow scheduler` hosts
# the LocalExecutor, `airflow celery worker` the Celery pool.
FORKING_COMMANDS = (("scheduler",), ("celery", "worker"))


def forks_tasks(argv: Sequence[str]) -> bool:
    """Whether the process started with ``argv`` forks task processes."""
    words = [word for word in argv[1:] if not word.startswith("-")]
    return any(tuple(words[:len(command)]) == command for command in FORKING_COMMANDS)


def import_task_modules() -> list[str]:
    """Import :data:`TASK_MODULES`; one that fails to import is logged and left to the task."""
    imported = []
    for name in TASK_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the task imports it again and reports the error where it belongs
            log.warning("ls4: could not preload %s for the task processes", name, exc_info=True)
            continue
        imported.append(name)
    return imported
