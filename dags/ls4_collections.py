"""One DAG per registered collection: ``ls4_{collection}``.

The registry (``LS4_REGISTRY``) is a local JSON file kept by the
``ls4_discovery`` DAG; reading it makes no network call, so parsing stays fast.
"""

from __future__ import annotations

import gc
import zlib
from contextlib import contextmanager
from datetime import datetime, timedelta

from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, get_parsing_context, task_group

from ls4_ops import registry
from ls4_ops.layout import Collection
from ls4_ops.mapfile import mapfile_url
from ls4_ops.operators import (
    CogOperator,
    CompressOperator,
    CollectionOverviewOperator,
    OverviewsOperator,
    PlanUploadsOperator,
    PublishMapfileOperator,
    PublishPreviewOperator,
    ReportRunOperator,
    TileIndexOperator,
    WmsServedOperator,
)
from ls4_ops.operators.assets import TILE_INDEXES, collection_asset
from ls4_ops.operators.collection import INDEX_WORK_XCOM, REPORT_TASK_ID, UNPROCESSED_XCOM
from ls4_ops.operators.dags import TIMEOUTS, daily
from ls4_ops.operators.notifications import notify_task_failure
from ls4_ops.preview import preview_url
from ls4_ops.settings import Settings

# How long the first task waits for a georef upload before the run is skipped.
SENSOR_TIMEOUT = timedelta(minutes=5)
# Passed to each operator rather than as default_args: Airflow deep-copies
# default_args for every task, which dominates parse time at 500 collections.
TASK_ARGS = {
    "owner": "ls4",
    "retries": 2,
    "retry_exponential_backoff": True,
    "on_failure_callback": notify_task_failure,
}
# Manual runs: `airflow dags trigger ls4_x --conf '{"keys": [...], "force": true}'`
# (no DAG params: their JSON-schema validation costs ~6 ms a DAG at parse time).
CONF_KEYS = "{{ (dag_run.conf or {}).get('keys', []) }}"
CONF_FORCE = "{{ (dag_run.conf or {}).get('force', false) }}"

DOC = """\
### {title}

Turns the georeferenced uploads under `s3://{bucket}/{georef}` into COGs under
`{cog}`, keeps the tile index current (PostGIS table `{table}`, one row per
COG, and `{index_zip}`) and publishes the WMS mapfile `{mapfile}`.

* WMS: {wms}&SERVICE=WMS&REQUEST=GetCapabilities
* Preview in a browser (imagery, footprints, click for a frame's attributes): {preview}
* Runs when its uploads change (an upload event, or discovery's listing where
  the bucket sends none; changes during a run start the next one) and once a
  day at {reconcile} UTC to reconcile; one run at a time. Raster work only for
  new or changed uploads; index work left undone by an earlier run is
  finished, and the COG and row of a deleted upload are removed.
* Reprocess by hand: trigger with `{{"keys": ["<file>.tif", ...]}}` (file names
  under `{georef}`, or whole keys) for some frames, or `{{"force": true}}` for
  the whole collection.
"""


def reconcile_minute(collection: Collection) -> int:
    """The minute of the reconciliation hour a collection's daily run starts at: spread
    over the hour (stable across parses) rather than all collections at once."""
    return zlib.crc32(collection.name.encode()) % 60


def collection_dag(collection: Collection, settings: Settings) -> DAG:
    task_args = {**TASK_ARGS, "retry_delay": timedelta(seconds=settings.retry_delay_s)}
    common = {"collection": collection, "bucket_name": settings.bucket,
              "aws_conn_id": settings.s3_conn_id, "postgis_conn_id": settings.postgis_conn_id, **task_args}
    with DAG(
        dag_id=collection.dag_id,
        description=f"COGs, tile index and WMS of {collection.title}",
        doc_md=DOC.format(title=collection.title, bucket=settings.bucket, georef=collection.prefix("georef"),
                          cog=collection.prefix("cog"), index_zip=collection.tile_index_zip_key,
                          table=collection.table, mapfile=collection.mapfile_key,
                          wms=mapfile_url(collection, settings.wms_url),
                          preview=preview_url(collection, settings.wms_url),
                          reconcile=f"{settings.reconcile_hour:02d}:{reconcile_minute(collection):02d}"),
        schedule=AssetOrTimeSchedule(
            timetable=daily(settings.reconcile_hour, reconcile_minute(collection)),
            assets=collection_asset(collection, settings.bucket)),
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        render_template_as_native_obj=True,
        tags=["ls4", f"band:{collection.band}", f"type:{collection.type}", f"county:{collection.county}"],
    ) as dag:
        wait = S3KeySensor(
            task_id="wait_for_georef",
            bucket_name=settings.bucket,
            bucket_key=f"{collection.prefix('georef')}*",
            wildcard_match=True,
            aws_conn_id=settings.s3_conn_id,
            # Waits in the triggerer, not in a worker slot, until an upload exists.
            deferrable=True,
            poke_interval=60,
            timeout=int(SENSOR_TIMEOUT.total_seconds()),
            soft_fail=True,
            **task_args,
        )
        plan = PlanUploadsOperator(task_id="plan", keys=CONF_KEYS, force=CONF_FORCE,
                                   execution_timeout=TIMEOUTS["plan"], **common)

        @task_group(group_id="frame", tooltip="compress -> overviews -> COG, for each upload")
        def frame(upload):
            stage = {"upload": upload, "execution_timeout": TIMEOUTS["frame stage"], **common}
            compress = CompressOperator(task_id="compress", **stage)
            overviews = OverviewsOperator(task_id="overviews", **stage)
            cog = CogOperator(task_id="cog", **stage)
            compress >> overviews >> cog

        frames = frame.expand(upload=plan.output)
        # The index follows the frames whatever became of them (a bad upload must
        # not keep the others out of it, and index work alone has no frame to
        # wait for), but only a plan that succeeded: a failed plan fails the run.
        frames_done = EmptyOperator(task_id="frames_done", trigger_rule="all_done")
        # Also downstream of plan (through its XCom): a plan with nothing to do skips it.
        index = TileIndexOperator(task_id="tile_index", index_work=plan.output[INDEX_WORK_XCOM],
                                  outlets=[TILE_INDEXES], execution_timeout=TIMEOUTS["tile index"], **common)
        overview = CollectionOverviewOperator(task_id="collection_overview",
                                              execution_timeout=TIMEOUTS["collection overview"], **common)
        publishing = {"execution_timeout": TIMEOUTS["publish"], **common}
        publish = PublishMapfileOperator(task_id="mapfile", tile_index=index.output, overview=overview.output,
                                         **publishing)
        # The run is green only once MapServer serves what it published.
        served = WmsServedOperator(task_id="wms_served", published=publish.output, **publishing)
        # Beside wms_served, not after it: the page needs only what the mapfile task
        # returned, and the sync brings page and mapfile to MapServer in the same pass.
        page = PublishPreviewOperator(task_id="preview", published=publish.output, **publishing)
        # A leaf beside the publishing chain: the run fails when a frame failed
        # or when publishing failed, and operators see which in the grid.
        report = ReportRunOperator(task_id=REPORT_TASK_ID, planned=plan.output,
                                   unprocessed=plan.output[UNPROCESSED_XCOM], trigger_rule="all_done", **publishing)
        wait >> plan >> frames >> frames_done >> index >> overview >> publish >> [served, page]
        frames >> report
    return dag


@contextmanager
def garbage_collection_paused():
    """Building hundreds of DAGs allocates millions of objects that all stay
    alive; the cyclic collector would rescan them again and again for nothing
    (about 15 % of the parse time at 500 collections)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def register_all(namespace: dict) -> None:
    settings = Settings.from_env()
    # A task parses this file again before it runs, with its DAG's id in the
    # parsing context: build that one DAG, not every registered collection.
    only = get_parsing_context().dag_id
    with garbage_collection_paused():
        for collection in registry.current(settings).values():
            if only is None or collection.dag_id == only:
                namespace[collection.dag_id] = collection_dag(collection, settings)


register_all(globals())
