"""``ls4_discovery`` (an Airflow DAG): registers new collections so they get their own DAG."""

# Airflow's DAG processor (in safe mode) only parses files that say both "airflow" and "dag".
from __future__ import annotations

from datetime import timedelta

from ls4_ops.operators import DiscoverCollectionsOperator
from ls4_ops.operators.dags import bucket_wide_dag
from ls4_ops.settings import Settings

settings = Settings.from_env()

with bucket_wide_dag(
    "ls4_discovery",
    description="Find collections in the bucket and register a DAG for each",
    doc_md=__doc__ + "\n\nLists `bw/` and `nc/` every two minutes, adds collections with georef "
                     "uploads to the registry (`LS4_REGISTRY`), makes new scans of collections "
                     "without georef uploads public-read (their DAG does it once they have one), "
                     "and notifies about uploads that do not fit the bucket layout.",
    schedule=timedelta(minutes=2),
    retry_delay=timedelta(seconds=20),
) as dag:
    DiscoverCollectionsOperator(task_id="discover", registry_path=settings.registry_path,
                                bucket_name=settings.bucket, aws_conn_id=settings.s3_conn_id)
