"""A first upload into a never-seen collection is processed by a running Airflow, untouched.

Runs last (it starts `airflow standalone` on the test stack's database after
the `dag.test()` tests are done with it).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from rasterio.warp import transform_bounds

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
    subprocess.run([STACK, "start", "airflow"], check=True)
    yield
    subprocess.run([STACK, "stop", "airflow"], check=False)


def wait_until(what: str, check):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(3)
    raise AssertionError(f"no {what} within {TIMEOUT} s")


def test_new_collection_gets_its_dag_cogs_index_and_wms_without_a_human(airflow, tmp_path):
    path = str(tmp_path / "frame.tif")
    make_frame(path, "nc", 800, 600, crs="EPSG:26914", bounds=UTM_BOUNDS, collar=10)
    pipeline.upload(path, KEY)
    upload = parse_key(KEY)
    collection = upload.collection
    client = pipeline.s3()

    wait_until("registered collection", lambda: collection.name in registry.load(os.environ["LS4_REGISTRY"]))

    def has_cog() -> bool:
        listing = client.list_objects_v2(Bucket=pipeline.bucket(), Prefix=upload.cog_key)
        return listing.get("KeyCount", 0) > 0
    wait_until("COG", has_cog)
    pipeline.wait_for_mapfile(collection, timeout=TIMEOUT)

    minx, miny, maxx, maxy = transform_bounds("EPSG:26914", "EPSG:3857", *UTM_BOUNDS)
    dx, dy = (maxx - minx) * 0.2, (maxy - miny) * 0.2
    bbox = (minx + dx, miny + dy, maxx - dx, maxy - dy)
    rendered = wms.get_map(os.environ["LS4_WMS_URL"], collection, bbox)
    expected, valid = wms.source_in_box(path, bbox, bands=3)
    assert wms.mean_abs_difference(rendered, expected, valid) < 4.0
