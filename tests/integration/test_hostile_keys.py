"""Keys no layout allows, some of them hostile: spaces, quotes, unicode, SQL and mapfile
syntax in the county, agency or file part. Each is told once with its reason, none reaches
SQL, a mapfile or GDAL, and they stop neither discovery nor the collection beside them."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from include import local_stack
from ls4_ops import registry, tileindex
from ls4_ops.layout import parse_key
from tests.integration import pipeline

pytestmark = pytest.mark.usefixtures("airflow_db")

GOOD = "nc/hostileville/usda_1961/frames/georef/19610412_1-1.tif"
COLLECTION = parse_key(GOOD).collection
HOSTILE = {
    "nc/travis county/usda_1961/frames/georef/19610412_1-1.tif": "county folder 'travis county'",
    "nc/o'brien/usda_1961/frames/georef/19610412_1-1.tif": "county folder \"o'brien\"",
    "nc/zürich/usda_1961/frames/georef/19610412_1-1.tif": "county folder 'zürich'",
    "nc/hostileville/usda_1961\"END/frames/georef/19610412_1-1.tif": "must be {agency}_{yyyy}",
    "nc/hostileville/usda_1961/frames/georef/x'; DROP TABLE ls4.tile_indexes; --.tif": "may only use A-Z",
    'nc/hostileville/usda_1961/frames/georef/x" END LAYER.tif': "may only use A-Z",
    "nc/hostileville/usda_1961/frames/georef/frame 2.tif": "may only use A-Z",
}


@pytest.fixture(scope="module")
def run(services, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    made = pipeline.upload_row(folder, [GOOD], (650_000.0, 3_350_000.0), (300, 200))
    for key in HOSTILE:
        pipeline.upload(made[GOOD], key)
    notified, before = len(pipeline.notifications()), registry.load(os.environ["LS4_REGISTRY"])
    registered = pipeline.discover()
    collection_run = pipeline.run_dag(COLLECTION.dag_id)
    return set(registered) - set(before), collection_run, pipeline.notifications()[notified:]


def test_each_hostile_key_is_told_once_with_its_reason(run):
    _, _, notices = run
    for key, reason in HOSTILE.items():
        told = [n for n in notices if n["key"] == key]
        assert len(told) == 1, (key, told)
        assert told[0]["subject"] == "upload outside the bucket layout" and reason in told[0]["reason"], told[0]


def test_discovery_registers_the_good_collection_beside_them_and_its_run_processes_its_frame(run):
    new, collection_run, _ = run
    assert new == {COLLECTION.name}
    states = {ti.task_id: ti.state for ti in collection_run.get_task_instances()}
    assert states["frame.cog"] == "success" and states["tile_index"] == "success"
    # The run is not green: the hostile keys in its own folder are left unprocessed, and it says so.
    assert collection_run.state == "failed" and states["report"] == "failed"


def test_no_hostile_key_reached_the_database_or_a_mapfile(run):
    with local_stack.postgis_engine().connect() as connection:
        catalogued = connection.execute(text(f"SELECT table_name FROM {tileindex.CATALOG}")).scalars().all()
        rows = connection.execute(text(f'SELECT cog_key FROM public."{COLLECTION.table}"')).scalars().all()
    assert COLLECTION.table in catalogued and all(name.isidentifier() for name in catalogued)
    assert rows == [COLLECTION.cog_key("19610412_1-1")]
    served = open(pipeline.wait_for_mapfile(COLLECTION)).read()
    assert "DROP TABLE" not in served and "END LAYER" not in served and "travis county" not in served
