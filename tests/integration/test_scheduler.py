"""Uploads processed by a running Airflow, untouched: the bucket's events start the
runs of the collections they concern (through the S3 emulator's SQS queue, the
triggerer's watcher and the ``ls4_uploads`` router), bursts coalesce, and the
daily reconciliation repairs what no event reports.

Starts `airflow standalone` on the test stack's database for this module
and stops it afterwards, so the `dag.test()` tests of other modules never run
beside a scheduler.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from rasterio.warp import transform_bounds
from sqlalchemy import func, select

from ls4_ops import registry
from ls4_ops.layout import parse_key
from include.synthetic import make_frame
from tests.conftest import STACK
from tests.integration import pipeline, wms

KEY = "nc/newtown/usda_1961/frames/georef/19610404_7-12.tif"
UTM_BOUNDS = (640_000.0, 3_360_000.0, 640_800.0, 3_360_600.0)
TIMEOUT = 480


@pytest.fixture(scope="module")
def airflow(services, airflow_db):
    # Events of the dag.test() sessions before this one are no one's work now.
    pipeline.sqs().purge_queue(QueueUrl=os.environ["LS4_UPLOAD_QUEUE"])
    subprocess.run([STACK, "start", "airflow"], check=True)
    yield
    subprocess.run([STACK, "stop", "airflow"], check=False)


def wait_until(what: str, check) -> None:
    pipeline.wait_until(what, check, TIMEOUT)


NEW_AT_ONCE = [f"nc/newtown{n}/usda_1961/frames/georef/19610404_7-{i}.tif" for n in range(1, 5) for i in (1, 2)]


def test_five_new_collections_at_once_get_their_dags_cogs_indexes_and_wms_without_a_human(airflow, tmp_path):
    path = str(tmp_path / "frame.tif")
    make_frame(path, "nc", 800, 600, crs="EPSG:26914", bounds=UTM_BOUNDS, collar=10)
    others = tmp_path / "others"
    others.mkdir()
    with ThreadPoolExecutor(2) as pool:
        uploads = [pool.submit(pipeline.upload, path, KEY), pool.submit(upload_frames, others, NEW_AT_ONCE)]
        for upload in uploads:
            upload.result()
    collection = parse_key(KEY).collection
    new = {parse_key(key).collection for key in [KEY, *NEW_AT_ONCE]}
    assert len(new) == 5

    wait_until("five registered collections",
               lambda: new <= set(registry.load(os.environ["LS4_REGISTRY"]).values()))
    wait_until("every COG", lambda: all(has_cog(key) for key in [KEY, *NEW_AT_ONCE]))
    for each in new:
        pipeline.wait_for_mapfile(each, timeout=TIMEOUT)
        # Each good frame is in its collection's index exactly once.
        expected = sorted(parse_key(key).cog_key for key in [KEY, *NEW_AT_ONCE]
                          if parse_key(key).collection == each)
        wait_until(f"{each.name} indexed", lambda: pipeline.indexed_cog_keys(each) == expected)

    minx, miny, maxx, maxy = transform_bounds("EPSG:26914", "EPSG:3857", *UTM_BOUNDS)
    dx, dy = (maxx - minx) * 0.2, (maxy - miny) * 0.2
    bbox = (minx + dx, miny + dy, maxx - dx, maxy - dy)
    rendered = wms.get_map(os.environ["LS4_WMS_URL"], collection, bbox)
    expected, valid = wms.source_in_box(path, bbox, bands=3)
    assert wms.mean_abs_difference(rendered, expected, valid) < 4.0


OTHER_KEY = "nc/othertown/usda_1961/frames/georef/19610404_7-13.tif"
BURST = 200  # uploads at once into one collection


def runs_of(dag_id: str) -> list[tuple[str, str, str]]:
    """(run id, state, run type) of each run of ``dag_id``, oldest first."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return [(run.run_id, run.state, run.run_type)
                for run in session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id))]


def frames_processed_by(dag_id: str, run_id: str) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == "frame.cog",
            TaskInstance.map_index >= 0))  # a run with no frame has one unexpanded, skipped placeholder


def task_state(dag_id: str, run_id: str, task_id: str) -> str | None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(select(TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id))


def idle(*dag_ids: str) -> bool:
    return all(state not in ("queued", "running") for dag_id in dag_ids for _, state, _ in runs_of(dag_id))


def has_cog(georef_key: str) -> bool:
    listing = pipeline.s3().list_objects_v2(Bucket=pipeline.bucket(), Prefix=parse_key(georef_key).cog_key)
    return listing.get("KeyCount", 0) > 0


def upload_frames(tmp_path, keys: list[str], origin=(650_000.0, 3_360_000.0), size=(96, 64)) -> None:
    """Small collared frames side by side, uploaded at the same time."""
    paths = []
    for i, key in enumerate(keys):
        path = str(tmp_path / f"{i}.tif")
        make_frame(path, "nc", *size, crs=pipeline.UTM, bounds=pipeline.row_bounds(origin, size, i), collar=4)
        paths.append(path)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(pipeline.upload, paths, keys))


@pytest.fixture
def known_collection(airflow, tmp_path):
    """KEY's collection, registered and processed by the running Airflow, and idle."""
    if not has_cog(KEY):
        upload_frames(tmp_path, [KEY], origin=(UTM_BOUNDS[0], UTM_BOUNDS[1]))
        wait_until("COG", lambda: has_cog(KEY))
    dag_id = parse_key(KEY).collection.dag_id
    wait_until("collection idle", lambda: runs_of(dag_id) and idle(dag_id))
    return dag_id


def test_an_upload_runs_its_own_collection_only(known_collection, tmp_path):
    mine, other = known_collection, parse_key(OTHER_KEY).collection.dag_id
    upload_frames(tmp_path, [OTHER_KEY])
    wait_until("COG of the other collection", lambda: has_cog(OTHER_KEY))
    wait_until("both collections idle", lambda: runs_of(other) and idle(mine, other))
    before = {dag_id: runs_of(dag_id) for dag_id in (mine, other)}

    key = KEY.replace("7-12", "7-20")
    upload_frames(tmp_path, [key], origin=(641_000.0, 3_360_000.0))
    wait_until("COG", lambda: has_cog(key))
    wait_until("both collections idle", lambda: idle(mine, other))
    new = runs_of(mine)[len(before[mine]):]
    assert new and {run_type for _, _, run_type in new} == {"asset_triggered"}
    assert runs_of(other) == before[other]


def test_a_burst_of_uploads_starts_a_few_runs_and_an_upload_during_a_run_waits_for_the_next(known_collection,
                                                                                            tmp_path):
    dag_id = known_collection
    before = len(runs_of(dag_id))
    burst = [KEY.replace("7-12", f"9-{i}") for i in range(BURST)]
    upload_frames(tmp_path, burst, origin=(642_000.0, 3_362_000.0))
    pipeline.wait_until("every COG of the burst", lambda: all(has_cog(key) for key in burst), 3 * TIMEOUT)
    wait_until("collection idle", lambda: idle(dag_id))
    burst_runs = runs_of(dag_id)[before:]
    assert 1 <= len(burst_runs) <= 4, burst_runs
    assert sum(frames_processed_by(dag_id, run_id) for run_id, _, _ in burst_runs) == len(burst)
    indexed = pipeline.indexed_cog_keys(parse_key(KEY).collection)
    assert len(indexed) == len(set(indexed)) and {parse_key(key).cog_key for key in burst} <= set(indexed)

    first, late = KEY.replace("7-12", "10-1"), KEY.replace("7-12", "10-2")
    for folder in ("first", "late"):
        (tmp_path / folder).mkdir()
    upload_frames(tmp_path / "first", [first], origin=(645_000.0, 3_362_000.0))
    running = []

    def planned_and_running() -> bool:
        running[:] = [run_id for run_id, state, _ in runs_of(dag_id)[before + len(burst_runs):]
                      if state == "running" and task_state(dag_id, run_id, "plan") == "success"]
        return bool(running)
    # Checked often: a run of one small frame is past its plan for a few seconds only.
    pipeline.wait_until("a run past its plan", planned_and_running, TIMEOUT, interval=0.3)
    upload_frames(tmp_path / "late", [late], origin=(646_000.0, 3_362_000.0))
    wait_until("COG of the upload made during the run", lambda: has_cog(late) and idle(dag_id))
    assert frames_processed_by(dag_id, running[0]) == 1  # it had planned before the upload came
    later = [run_id for run_id, _, _ in runs_of(dag_id)]
    assert later.index(running[0]) < len(later) - 1
    assert sum(frames_processed_by(dag_id, run_id) for run_id in later[later.index(running[0]) + 1:]) == 1


def test_the_daily_reconciliation_puts_back_a_cog_deleted_by_hand(known_collection):
    dag_id = known_collection
    cog = parse_key(KEY).cog_key
    pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=cog)
    time.sleep(25)  # a long poll and more: the deletion of an output is no upload event
    assert not has_cog(KEY) and idle(dag_id)
    # What the daily run does: a run with no keys; it compares the uploads with the COGs.
    subprocess.run([os.path.join(os.environ["LS4_VENV"], "bin", "airflow"), "dags", "trigger", dag_id],
                   check=True, capture_output=True)
    wait_until("COG put back", lambda: has_cog(KEY) and idle(dag_id))


def test_no_secret_in_any_task_log_rendered_field_serialized_dag_or_dag_file(known_collection):
    """After the runs above (events, bursts, reconciliation): Airflow masked every secret."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    secrets = [os.environ["LS4_S3_SECRET_KEY"], os.environ["LS4_PG_PASSWORD"]]
    logs = [os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(os.environ["AIRFLOW_HOME"], "logs"))
            for name in names]
    dag_files = [os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], name)
                 for name in os.listdir(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) if name.endswith(".py")]
    for path in logs + dag_files:
        with open(path, errors="replace") as handle:
            text = handle.read()
        assert not any(secret in text for secret in secrets), path
    with create_session() as session:
        rendered = [str(fields.rendered_fields) for fields in session.scalars(select(RenderedTaskInstanceFields))]
        serialized = [json.dumps(dag.data) for dag in session.scalars(select(SerializedDagModel))]
    for text in rendered + serialized:
        assert not any(secret in text for secret in secrets), text[:200]
    # There was something to look at: the burst alone left hundreds of task logs.
    assert len(logs) > 200 and len(rendered) > 20 and len(serialized) > 5, (len(logs), len(rendered))
