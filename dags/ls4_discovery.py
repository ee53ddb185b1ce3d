"""``ls4_discovery`` (an Airflow DAG): registers new collections so they get their own DAG,
and starts the runs of collections whose uploads changed."""

# Airflow's DAG processor (in safe mode) only parses files that say both "airflow" and "dag".
from __future__ import annotations

from datetime import timedelta

from ls4_ops.operators import DiscoverCollectionsOperator
from ls4_ops.operators.dags import bucket_wide_dag, daily
from ls4_ops.settings import Settings

settings = Settings.from_env()
# Without upload events, the listing is how ls4 learns of uploads; with them,
# it is the daily reconciliation, for whatever an event missed.
POLL_EVERY = timedelta(minutes=2)

with bucket_wide_dag(
    "ls4_discovery",
    description="Find collections and changed uploads in the bucket",
    doc_md=__doc__ + "\n\n" + (
        f"Once a day at {settings.reconcile_hour:02d}:00 UTC (the bucket sends upload events to "
        "`ls4_uploads`; this catches what an event missed), "
        if settings.upload_queue else
        "Every two minutes (the bucket sends no upload events), ")
    + "lists `bw/` and `nc/`, adds collections with georef uploads to the registry (table `ls4.collections` in PostGIS), "
    + ("" if settings.upload_queue else
       "starts the run of each collection with uploads changed since its last successful run or a COG "
       "whose upload is gone, ")
    + "makes new scans of collections without georef uploads public-read (their "
      "DAG does it once they have one), and notifies about uploads that do not fit the bucket layout.",
    schedule=daily(settings.reconcile_hour) if settings.upload_queue else POLL_EVERY,
    retry_delay=timedelta(seconds=20),
) as dag:
    DiscoverCollectionsOperator(task_id="discover", registry_path=settings.registry_path,
                                start_runs=not settings.upload_queue, bucket_name=settings.bucket,
                                aws_conn_id=settings.s3_conn_id, postgis_conn_id=settings.postgis_conn_id)
