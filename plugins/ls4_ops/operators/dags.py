"""What ls4's DAGs have in common: the bucket-wide DAGs' shape, the daily time, a cheap hash."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

from airflow.sdk import DAG, CronTriggerTimetable

from ls4_ops.operators.notifications import notify_task_failure

# How long a task may take before it fails (and retries) instead of holding a worker,
# by the work it does. A frame stage of the largest upload ls4 takes (LS4_MAX_PIXELS,
# 3 Gpx) takes about 2 minutes of raster work on 2 cores (bench-raster: ~30 Mpx/s a
# stage) plus its transfers through S3; the collection-wide tasks list, query and
# write for thousands of frames; the bucket-wide ones for the whole archive.
TIMEOUTS = {
    "frame stage": timedelta(minutes=30),
    "plan": timedelta(minutes=15),
    "tile index": timedelta(minutes=30),
    "collection overview": timedelta(minutes=60),
    "publish": timedelta(minutes=10),  # the mapfile, the preview page, waiting for the WMS, the report
    "bucket-wide": timedelta(minutes=60),  # discovery, the router, the compiled index, maintenance
}


class CollectionDAG(DAG):
    """A DAG hashed by its id.

    Airflow hashes a task's DAG for every dependency it sets (each ``>>``, each
    XCom input): by default from its id, tasks, dates and schedule, and an
    asset-or-time schedule, having no hash, is written out with ``repr`` each
    time, a sixth of the time it takes to build a collection's DAG. DAGs that
    are equal have the same id, so the id alone is a valid hash.
    """

    def __hash__(self):
        return hash(self.dag_id)


def bucket_wide_dag(dag_id: str, *, description: str, doc_md: str, schedule, retry_delay: timedelta) -> DAG:
    """A DAG that runs one at a time on its schedule from when it appears (no
    catch-up of missed intervals), retries its tasks (each within its time) and
    notifies when one fails."""
    return DAG(
        dag_id=dag_id,
        description=description,
        doc_md=doc_md,
        schedule=schedule,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        default_args={"owner": "ls4", "retries": 2, "retry_delay": retry_delay,
                      "execution_timeout": TIMEOUTS["bucket-wide"], "on_failure_callback": notify_task_failure},
        tags=["ls4", "maintenance"],
    )


@lru_cache(maxsize=None)  # one instance per time of day, shared by the collections' DAGs
def daily(hour: int, minute: int = 0) -> CronTriggerTimetable:
    """Every day at ``hour``:``minute`` UTC; a DAG that missed the last time (new, or
    Airflow was down) runs once at once, not once per day missed."""
    return CronTriggerTimetable(f"{minute} {hour} * * *", timezone="UTC")
