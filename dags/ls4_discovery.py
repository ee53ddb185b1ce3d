"""``ls4_discovery``: registers new collections so they get their own DAG."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from ls4_ops.operators import DiscoverCollectionsOperator
from ls4_ops.operators.notifications import notify_task_failure
from ls4_ops.settings import Settings

settings = Settings.from_env()

with DAG(
    dag_id="ls4_discovery",
    description="Find collections in the bucket and register a DAG for each",
    doc_md=__doc__ + "\n\nLists `bw/` and `nc/` every two minutes, adds collections with georef "
                     "uploads to the registry (`LS4_REGISTRY`), makes new scans of collections "
                     "without georef uploads public-read (their DAG does it once they have one), "
                     "and notifies about uploads that do not fit the bucket layout.",
    schedule=timedelta(minutes=2),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    default_args={"owner": "ls4", "retries": 2, "retry_delay": timedelta(seconds=20),
                  "on_failure_callback": notify_task_failure},
    tags=["ls4", "maintenance"],
) as dag:
    DiscoverCollectionsOperator(task_id="discover", registry_path=settings.registry_path,
                                bucket_name=settings.bucket, aws_conn_id=settings.s3_conn_id)
