"""``ls4_compiled_index`` (an Airflow DAG): every collection's footprints in one public GeoJSON file."""

# Airflow's DAG processor (in safe mode) only parses files that say both "airflow" and "dag".
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule

from ls4_ops.layout import COMPILED_INDEX_KEY
from ls4_ops.operators import CompileIndexOperator
from ls4_ops.operators.assets import TILE_INDEXES
from ls4_ops.operators.dags import bucket_wide_dag, daily
from ls4_ops.settings import Settings

settings = Settings.from_env()

with bucket_wide_dag(
    "ls4_compiled_index",
    description="All collections' tile indexes in one GeoJSON file",
    doc_md=__doc__ + f"\n\nAfter any collection's tile index changed (a burst of changes is one run), "
                     f"and once a day, writes `{COMPILED_INDEX_KEY}` (public-read) in the bucket: one "
                     "feature per indexed COG of every collection, in EPSG:4326, with `tablename`, "
                     "`collection`, `dl_orig`, `dl_georef` and `dl_index`, from the PostGIS tile-index "
                     "tables. The file is replaced in one upload, and only when a table changed since it "
                     "was written; otherwise the task is skipped.",
    # Not hourly, as the original: sooner after a change, and nothing at all when nothing changes.
    schedule=AssetOrTimeSchedule(timetable=daily(settings.reconcile_hour, 30), assets=TILE_INDEXES),
    retry_delay=timedelta(minutes=2),
) as dag:
    CompileIndexOperator(task_id="compile", bucket_name=settings.bucket, aws_conn_id=settings.s3_conn_id,
                         postgis_conn_id=settings.postgis_conn_id)
