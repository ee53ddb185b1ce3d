"""What ls4's DAGs have in common: the bucket-wide DAGs' shape, the daily time."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

from airflow.sdk import DAG, CronTriggerTimetable

from ls4_ops.operators.notifications import notify_task_failure


def bucket_wide_dag(dag_id: str, *, description: str, doc_md: str, schedule, retry_delay: timedelta) -> DAG:
    """A DAG that runs one at a time on its schedule from when it appears (no
    catch-up of missed intervals), retries its tasks and notifies when one fails."""
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
                      "on_failure_callback": notify_task_failure},
        tags=["ls4", "maintenance"],
    )


@lru_cache(maxsize=None)  # one instance per time of day, shared by the collections' DAGs
def daily(hour: int, minute: int = 0) -> CronTriggerTimetable:
    """Every day at ``hour``:``minute`` UTC; a DAG that missed the last time (new, or
    Airflow was down) runs once at once, not once per day missed."""
    return CronTriggerTimetable(f"{minute} {hour} * * *", timezone="UTC")
