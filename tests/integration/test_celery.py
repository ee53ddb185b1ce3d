"""The scaled-out deployment on this machine: the same DAGs on CeleryExecutor.

``stack.sh`` with ``LS4_EXECUTOR=celery`` starts Redis (the broker), Airflow's
metadata in a database of the test stack's PostgreSQL, the scheduler,
dag-processor, triggerer and API server as processes of their own, and two
Celery workers, each in a folder of its own (working directory, scratch
folder, copy of the registry) as if on hosts of their own: one serves the
raster queue, the other the default queue. A collection uploaded to the bucket
is processed without a human, its frames on one worker and everything else on
the other: the tasks share nothing but S3, PostGIS and Airflow's own state.

Cheap on purpose (three small frames, a worker slot or two each): the stack's
start and the run take two to three minutes on 2 cores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate
from sqlalchemy import create_engine, text

from include import local_stack
from ls4_ops import registry, tileindex
from ls4_ops.layout import parse_key
from tests.conftest import TEST_STACK
from tests.integration import pipeline, wms

KEYS = [f"nc/celeryville/usda_1963/frames/georef/19630101_1-{i}.tif" for i in (1, 2, 3)]
COLLECTION = parse_key(KEYS[0]).collection
ORIGIN, SIZE = (650_000.0, 3_370_000.0), (96, 64)
# Ports of this module alone (the session's stack has 19000, 15433, 18081, 18080 and its
# log servers 18793-18794; these log servers take 18893-18895).
CELERY_STACK = {
    **TEST_STACK,
    "LS4_EXECUTOR": "celery",
    "LS4_AIRFLOW_PORT": "18180",
    "LS4_REDIS_PORT": "16379",
    "LS4_AIRFLOW_DB": "airflow_celery",
    "AIRFLOW_HOME": os.path.join(TEST_STACK["LS4_STATE_DIR"], "airflow-celery"),
    "LS4_RASTER_CONCURRENCY": "1",
    "LS4_DEFAULT_CONCURRENCY": "2",
}
TIMEOUT = 480
RASTER_TASKS = {"frame.compress", "frame.overviews", "frame.cog", "collection_overview"}


def stack(env: dict, *args: str) -> None:
    subprocess.run([local_stack.STACK, *args, "redis", "airflow"], env=env, check=True, timeout=600)


@pytest.fixture(scope="module")
def celery(services):
    """The Celery stack on the session's S3, PostGIS and MapServer, from an empty metadata
    database and broker; its environment."""
    env = local_stack.environment(CELERY_STACK)
    with local_stack.postgis_engine().connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text(f'DROP DATABASE IF EXISTS "{env["LS4_AIRFLOW_DB"]}" WITH (FORCE)'))
    for folder in ("redis", "workers"):
        shutil.rmtree(os.path.join(env["LS4_STATE_DIR"], folder), ignore_errors=True)
    # Events of the sessions' dag.test() runs before this one are no one's work now.
    pipeline.sqs().purge_queue(QueueUrl=os.environ["LS4_UPLOAD_QUEUE"])
    try:
        stack(env, "start")
        yield env
    finally:
        stack(env, "stop")


def airflow_database(env: dict):
    return create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])


def run_states(env: dict) -> set[str]:
    with airflow_database(env).connect() as connection:
        return set(connection.execute(text("SELECT state FROM dag_run WHERE dag_id = :dag"),
                                      {"dag": COLLECTION.dag_id}).scalars())


def tasks_run_by(env: dict, worker: str) -> set[str]:
    """The tasks of the collection's DAG that a worker ran, from its log."""
    with open(os.path.join(env["LS4_STATE_DIR"], "log", f"worker-{worker}.log")) as log:
        return set(re.findall(rf"task_id='([a-z_.]+)', dag_id='{COLLECTION.dag_id}'", log.read()))


@pytest.fixture(scope="module")
def processed(celery, tmp_path_factory):
    sources = pipeline.upload_row(tmp_path_factory.mktemp("celery"), KEYS, ORIGIN, SIZE, collar=4)
    pipeline.wait_until("a finished run of the collection", lambda: {"success", "failed"} & run_states(celery),
                        TIMEOUT)
    assert "failed" not in run_states(celery)
    pipeline.wait_for_mapfile(COLLECTION)
    return sources


def test_an_upload_is_processed_into_valid_cogs_an_index_and_a_wms(celery, processed, tmp_path):
    client = pipeline.s3()
    for key in KEYS:
        local = str(tmp_path / "cog.tif")
        client.download_file(pipeline.bucket(), parse_key(key).cog_key, local)
        is_valid, errors, _ = cog_validate(local, quiet=True)
        assert is_valid, (key, errors)
    with local_stack.postgis_engine().connect() as connection:
        assert tileindex.summary(connection, COLLECTION).count == len(KEYS)
    bounds = transform_bounds(pipeline.UTM, "EPSG:3857", *pipeline.row_bounds(ORIGIN, SIZE, 1))
    dx, dy = (bounds[2] - bounds[0]) * 0.2, (bounds[3] - bounds[1]) * 0.2
    bbox = (bounds[0] + dx, bounds[1] + dy, bounds[2] - dx, bounds[3] - dy)
    # About the frame's own resolution: no upsampling to compare.
    rendered = wms.get_map(os.environ["LS4_WMS_URL"], COLLECTION, bbox, size=48)
    expected, valid = wms.source_in_box(processed[KEYS[1]], bbox, size=48, bands=3)
    assert wms.mean_abs_difference(rendered, expected, valid) < 4.0


def test_the_raster_work_ran_on_the_raster_worker_and_the_rest_on_the_other(celery, processed):
    raster, default = tasks_run_by(celery, "raster"), tasks_run_by(celery, "default")
    assert raster == RASTER_TASKS, raster
    assert {"plan", "tile_index", "mapfile", "wms_served"} <= default and not default & RASTER_TASKS, default
    with airflow_database(celery).connect() as connection:
        queues = dict(connection.execute(text("SELECT DISTINCT task_id, queue FROM task_instance WHERE dag_id = :dag"),
                                         {"dag": COLLECTION.dag_id}).tuples().all())
    assert {task: queue for task, queue in queues.items() if task in RASTER_TASKS} == dict.fromkeys(
        RASTER_TASKS, celery["LS4_RASTER_QUEUE"])


def test_each_worker_learned_the_collection_from_postgis_in_its_own_folder(celery, processed):
    """The raster worker never ran discovery or the router, yet built the collection's DAG:
    its copy of the registry came from PostGIS. Nothing of a task stays in a scratch folder."""
    for worker in ("raster", "default"):
        home = os.path.join(celery["LS4_STATE_DIR"], "workers", worker)
        assert COLLECTION.name in registry.load(os.path.join(home, "registry.json"))
        assert os.listdir(os.path.join(home, "scratch")) == []
