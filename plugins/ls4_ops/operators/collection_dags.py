"""One DAG per registered collection, ``ls4_{collection}``, built by the DAG files
``dags/ls4_collections_{shard}.py``: each builds the collections of its shard.

The registry is in PostGIS, kept by ``ls4_discovery`` and ``ls4_uploads``; the
factory reads this host's copy of it (``LS4_REGISTRY``), refreshed from PostGIS
when older than ``LS4_REGISTRY_MAX_AGE_S`` (see ``ls4_ops.registry.current``), so
parsing makes no slow network call.

Airflow's DAG processor parses and serializes each DAG file in a process of its
own, killed after ``dag_file_processor_timeout`` (50 s by default). One file for
all collections took 21 s at 2,000 collections on 2 idle cores, and over 50 s
on 2 busy ones, mostly in Airflow's serialization. Spread over ``SHARDS``
files (by a hash of the DAG id, stable across parses), each builds an eighth
of the DAGs (the slowest took 7.6 s at 2,000 collections on the busy machine,
``make bench-parse``), and two parsing processes work on two files at once.
"""

from __future__ import annotations

import gc
import zlib
from contextlib import contextmanager
from datetime import datetime, timedelta

from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import AssetOrTimeSchedule, get_parsing_context, task_group

from ls4_ops import registry
from ls4_ops.layout import Collection
from ls4_ops.mapfile import mapfile_url
from ls4_ops.operators import (
    CogOperator,
    CollectionOverviewOperator,
    CompressOperator,
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
from ls4_ops.operators.dags import TIMEOUTS, CollectionDAG, daily
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


def collection_dag(collection: Collection, settings: Settings) -> CollectionDAG:
    task_args = {**TASK_ARGS, "retry_delay": timedelta(seconds=settings.retry_delay_s)}
    common = {"collection": collection, "bucket_name": settings.bucket,
              "aws_conn_id": settings.s3_conn_id, "postgis_conn_id": settings.postgis_conn_id, **task_args}
    with CollectionDAG(
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
                                   execution_timeout=TIMEOUTS["plan"], pool=settings.s3_pool, **common)

        @task_group(group_id="frame", tooltip="compress -> overviews -> COG, for each upload")
        def frame(upload):
            # Later stages first (a weight from the upstream tasks): each frame goes on to
            # its COG as soon as its last stage is done, rather than every upload being
            # compressed before the first COG appears and all intermediates sit in S3.
            stage = {"upload": upload, "execution_timeout": TIMEOUTS["frame stage"], "weight_rule": "upstream",
                     "queue": settings.raster_queue, "pool": settings.s3_pool, **common}
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
                                  outlets=[TILE_INDEXES], execution_timeout=TIMEOUTS["tile index"],
                                  pool=settings.postgis_pool, **common)
        overview = CollectionOverviewOperator(task_id="collection_overview",
                                              execution_timeout=TIMEOUTS["collection overview"],
                                              queue=settings.raster_queue, pool=settings.s3_pool, **common)
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


# A process that parses again and again (a test session, ``dag.test()``, which
# parses the whole DAG folder each time) gives the objects it froze back to the
# collector once they are this many, so the DAGs of its earlier parses are freed.
FROZEN_AT_MOST = 2_000_000


@contextmanager
def garbage_collection_paused():
    """Building hundreds of DAGs allocates millions of objects that all stay
    alive as long as the process that parses them; the cyclic collector would
    rescan them again and again for nothing, while they are built and after
    (a third of the time a DagBag takes to parse 500 collections: the first
    collections after the build walk all of them). So the collector is paused
    while they are built, and then they, and all that was there before them,
    leave its view (``gc.freeze``), as they would when a process forks."""
    if gc.get_freeze_count() > FROZEN_AT_MOST:
        gc.unfreeze()
        gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


# The DAG files are dags/ls4_collections_0.py to ls4_collections_{SHARDS - 1}.py.
SHARDS = 8


def shard_of(dag_id: str) -> int:
    return zlib.crc32(dag_id.encode()) % SHARDS


def dag_file_module(dag_id: str) -> str:
    """The DAG file (module name, in the DAG folder) that builds the DAG ``dag_id``."""
    return f"ls4_collections_{shard_of(dag_id)}"


def register_shard(namespace: dict, shard: int) -> None:
    """Put the DAGs of the collections in ``shard`` into ``namespace`` (a DAG file's globals)."""
    settings = Settings.from_env()
    # A task parses its DAG file again before it runs, with its DAG's id in the
    # parsing context: build that one DAG, not the file's whole shard.
    only = get_parsing_context().dag_id
    with garbage_collection_paused():
        for collection in registry.current(settings).values():
            if shard_of(collection.dag_id) == shard and only in (None, collection.dag_id):
                namespace[collection.dag_id] = collection_dag(collection, settings)
