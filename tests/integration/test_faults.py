"""Outages while a multi-frame run is in flight: the S3 endpoint, then PostGIS, cut (behind a
proxy: the service keeps its data) and restored. Requests and tasks are retried, the run
completes, every frame is in the index, and nothing half-written is visible
under ``cog/``. MapServer stopped while a collection publishes: the run waits for it and
the collection is served once it is back."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from datetime import datetime, timezone

import pytest
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate

from ls4_ops.layout import parse_key
from ls4_ops.plan import SOURCE_KEY_METADATA
from tests.conftest import STACK
from tests.integration import pipeline, wms
from tests.integration.faults import CuttableProxy

pytestmark = pytest.mark.usefixtures("airflow_db")

FRAMES = 6
OUTAGE_AFTER_S = 3
# Longer than botocore retries a request for (about 15 s; psycopg does not retry), so that
# a task meeting it fails and is retried by Airflow.
OUTAGE_S = {"s3": 20, "postgis": 8}
# Shorter than the served check waits (2 min), longer than a 2-frame run takes to get there.
MAPSERVER_DOWN_S = 45
# A task's first retry after 5 s, the second 10-20 s later: past the outage.
RETRY_DELAY_S = "5"


def through(proxy: CuttableProxy, service: str) -> dict[str, str]:
    """The Airflow connection of ``service`` with the proxy in place of the service."""
    name = {"s3": "AIRFLOW_CONN_LS4_S3", "postgis": "AIRFLOW_CONN_LS4_POSTGIS"}[service]
    connection = json.loads(os.environ[name])
    if service == "s3":
        connection["extra"]["endpoint_url"] = f"http://127.0.0.1:{proxy.port}"
    else:
        connection["port"] = proxy.port
    return {name: json.dumps(connection)}


def target(service: str) -> tuple[str, int]:
    if service == "s3":
        host, port = os.environ["LS4_S3_ENDPOINT"].rsplit("/", 1)[-1].rsplit(":", 1)
        return host, int(port)
    return os.environ["LS4_PG_HOST"], int(os.environ["LS4_PG_PORT"])


@pytest.mark.parametrize("service", ["s3", "postgis"])
def test_a_run_outlasts_an_outage_with_every_frame_indexed_and_nothing_half_written(
        service, monkeypatch, tmp_path):
    georef = f"nc/{service}outage/usda_1963/frames/georef/"
    keys = [f"{georef}19630601_1-{i + 1}.tif" for i in range(FRAMES)]
    collection = parse_key(keys[0]).collection
    pipeline.upload_row(tmp_path, keys, (660_000.0, 3_350_000.0), (400, 300))
    assert collection.name in pipeline.discover()

    proxy = CuttableProxy(target(service))
    for name, value in through(proxy, service).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LS4_RETRY_DELAY_S", RETRY_DELAY_S)
    try:
        with proxy.outage(OUTAGE_AFTER_S, OUTAGE_S[service]):
            run = pipeline.run_dag(collection.dag_id)
    finally:
        proxy.close()

    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    # Requests were turned away: the clients retried them (botocore, GDAL), and where they
    # gave up the task failed and Airflow retried it (which of the two depends on the
    # request the cut meets).
    assert proxy.refused > 0, "the outage did not meet the run"
    rows = pipeline.indexed_cog_keys(collection)
    assert rows == sorted(parse_key(key).cog_key for key in keys)
    client = pipeline.s3()
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=pipeline.bucket(), Prefix=collection.prefix("cog"))
              .get("Contents", []) if collection.is_cog_key(o["Key"])]
    assert sorted(listed) == sorted(rows)
    for key in listed:  # each one whole: a valid COG made from its upload
        local = str(tmp_path / "check.tif")
        client.download_file(pipeline.bucket(), key, local)
        assert cog_validate(local, quiet=True)[0], key
        assert client.head_object(Bucket=pipeline.bucket(), Key=key)["Metadata"][SOURCE_KEY_METADATA] in keys


def test_a_collection_published_while_mapserver_is_down_is_served_once_it_is_back(tmp_path):
    georef = "nc/wmsoutage/usda_1963/frames/georef/"
    keys = [f"{georef}19630601_1-{i + 1}.tif" for i in range(2)]
    collection = parse_key(keys[0]).collection
    pipeline.upload_row(tmp_path, keys, (665_000.0, 3_350_000.0), (400, 300))
    assert collection.name in pipeline.discover()

    subprocess.run([STACK, "stop", "mapserver"], check=True, capture_output=True)
    back_at = []

    def bring_back() -> None:
        subprocess.run([STACK, "start", "mapserver"], check=True, capture_output=True)
        back_at.append(datetime.now(timezone.utc))
    back = threading.Timer(MAPSERVER_DOWN_S, bring_back)
    back.start()
    try:
        run = pipeline.run_dag(collection.dag_id)
    finally:
        back.join()
    states = {ti.task_id: ti for ti in run.get_task_instances()}
    assert run.state == "success", {task_id: ti.state for task_id, ti in states.items()}
    # The last step met the outage and waited: the run was not green before MapServer was back.
    assert states["wms_served"].start_date < back_at[0] < states["wms_served"].end_date
    minx, miny, maxx, maxy = pipeline.row_bounds((665_000.0, 3_350_000.0), (400, 300), 0)
    inside = transform_bounds(pipeline.UTM, "EPSG:3857", minx + 50, miny + 50, maxx - 50, maxy - 50)
    image = wms.get_map(os.environ["LS4_WMS_URL"], collection, inside)
    assert (image[3] == 255).all()  # the frame's inside, drawn opaque
