"""``ls4_uploads`` (an Airflow DAG): the bucket's upload events start their collections' runs."""

# Airflow's DAG processor (in safe mode) only parses files that say both "airflow" and "dag".
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, AssetWatcher

from ls4_ops.operators import RouteUploadsOperator
from ls4_ops.operators.assets import UPLOAD_EVENTS
from ls4_ops.operators.dags import bucket_wide_dag
from ls4_ops.settings import Settings
from ls4_ops.triggers import UploadEventsTrigger

settings = Settings.from_env()

if settings.upload_queue:  # else the bucket sends no events: ls4_discovery polls it
    upload_events = Asset(UPLOAD_EVENTS, watchers=[AssetWatcher(
        name="ls4_upload_queue",
        trigger=UploadEventsTrigger(queue_url=settings.upload_queue, bucket=settings.bucket,
                                    aws_conn_id=settings.s3_conn_id))])
    with bucket_wide_dag(
        "ls4_uploads",
        description="Start the runs of the collections whose uploads the bucket's events report",
        doc_md=__doc__ + f"\n\nThe triggerer long-polls `{settings.upload_queue}`, where the bucket "
                         "sends an event for every object created or removed under `bw/` and `nc/`. "
                         "Each batch of upload events runs this DAG once: it registers new collections, "
                         "makes scans of collections without a DAG public-read, reports uploads outside "
                         "the layout, and starts the run of every collection whose uploads changed. "
                         "Events that arrive during a collection's run start its next run.",
        schedule=[upload_events],
        retry_delay=timedelta(seconds=10),
    ) as dag:
        RouteUploadsOperator(task_id="route", registry_path=settings.registry_path,
                             bucket_name=settings.bucket, aws_conn_id=settings.s3_conn_id,
                             postgis_conn_id=settings.postgis_conn_id)
