"""``ls4_maintenance`` (an Airflow DAG): the original's daily maintenance job, made safe."""

# Airflow's DAG processor (in safe mode) only parses files that say both "airflow" and "dag".
from __future__ import annotations

from datetime import timedelta

from ls4_ops.layout import QUARANTINE_PREFIX
from ls4_ops.maintenance import QUARANTINE_SCHEMA, WORK_KEPT
from ls4_ops.operators.assets import TILE_INDEXES
from ls4_ops.operators.dags import bucket_wide_dag, daily
from ls4_ops.operators.maintenance import MaintenanceOperator
from ls4_ops.settings import Settings

settings = Settings.from_env()
# An hour after the daily reconciliation began: what the collections' own runs
# put right is put right by then, and what is left is worth an operator's time.
HOUR = (settings.reconcile_hour + 1) % 24

with bucket_wide_dag(
    "ls4_maintenance",
    description="Mapfiles against tables, and the bucket against its layout",
    doc_md=__doc__ + f"\n\nDaily at {HOUR:02d}:00 UTC: checks that every `mapfiles/*.map` has its PostGIS "
                     "table and every collection table its mapfile, and the whole bucket against its layout. "
                     f"Orphan mapfiles, preview pages and other objects in `mapfiles/` move to "
                     f"`{QUARANTINE_PREFIX}{{run}}/`, tables of collections with no upload left to the "
                     f"`{QUARANTINE_SCHEMA}` schema ("
                     + ("removed for good: `LS4_MAINTENANCE_DELETE=true`" if settings.maintenance_delete else
                        "removed for good only with `LS4_MAINTENANCE_DELETE=true`")
                     + f"); intermediates under `ls4-work/` older than {WORK_KEPT.days} days are deleted. "
                     "Uploads are never moved or deleted: objects outside the layout, COGs whose upload is "
                     "gone and scans that are not public are reported and notified. Trigger with "
                     '`{"dry_run": true}` to see what it would do without changing anything.',
    schedule=daily(HOUR),
    retry_delay=timedelta(minutes=5),
) as dag:
    # A quarantined table leaves the compiled index: this lets ls4_compiled_index look.
    MaintenanceOperator(task_id="maintain", dry_run="{{ (dag_run.conf or {}).get('dry_run', false) }}",
                        bucket_name=settings.bucket, aws_conn_id=settings.s3_conn_id,
                        postgis_conn_id=settings.postgis_conn_id, outlets=[TILE_INDEXES])
