"""The tile index at archive scale, on the real stack: valid-data footprints, runs that
finish index work left undone, deleted uploads, stray objects, runs that do nothing."""

from __future__ import annotations

import io
import os
import time
import zipfile

import geopandas
import pytest
from airflow.sdk.exceptions import AirflowFailException
from rasterio.warp import transform as transform_points, transform_bounds
from sqlalchemy import text

from ls4_ops import tileindex
from ls4_ops.layout import parse_key
from ls4_ops.operators import TileIndexOperator
from include.synthetic import make_frame
from tests.integration import pipeline, wms
from tests.integration.test_tileindex import drop, engine

pytestmark = pytest.mark.usefixtures("airflow_db")

ROOT = "nc/convergeville/tops_1980/frames/"
UTM = "EPSG:26914"
FRAME = (600, 500)  # pixels of 1 m
COLLAR = 12
ORIGIN = (630_000.0, 3_352_000.0)


def frame_bounds(i: int) -> tuple[float, float, float, float]:
    x0 = ORIGIN[0] + i * FRAME[0]
    return (x0, ORIGIN[1], x0 + FRAME[0], ORIGIN[1] + FRAME[1])


def georef(i: int) -> str:
    return f"{ROOT}georef/19800401_2-{i + 1}.tif"


def upload_frame(folder, i: int) -> str:
    path = str(folder / f"f{i}.tif")
    make_frame(path, "nc", *FRAME, crs=UTM, bounds=frame_bounds(i), collar=COLLAR)
    pipeline.upload(path, georef(i))
    pipeline.upload(path, parse_key(georef(i)).scanned_candidates()[0])
    return georef(i)


def run():
    return pipeline.run_dag(COLLECTION.dag_id)


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances() if ti.map_index in (-1, 0)}


def table_rows() -> dict[str, dict]:
    with engine().connect() as connection:
        result = connection.execute(text(
            f'SELECT {tileindex.COG_KEY_COLUMN}, frame_num, ST_NPoints(geom) AS points, '
            "ST_Covers(bbox, geom) AS inside, ST_Area(geom) / ST_Area(bbox) AS share "
            f'FROM public."{COLLECTION.table}"'))
        return {r[0]: r._asdict() for r in result}


def generations() -> tuple[int, int | None, int | None]:
    """The table's generation and those the published zip and mapfile show."""
    with engine().connect() as connection:
        current = tileindex.generation(connection, COLLECTION)
    client = pipeline.s3()

    def shown(key):
        head = client.head_object(Bucket=pipeline.bucket(), Key=key)
        return int(head["Metadata"][tileindex.GENERATION_METADATA])
    return current, shown(COLLECTION.tile_index_zip_key), shown(COLLECTION.mapfile_key)


def shapefile_frames() -> list[str]:
    body = pipeline.s3().get_object(Bucket=pipeline.bucket(), Key=COLLECTION.tile_index_zip_key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert sorted(archive.namelist()) == sorted(f"{COLLECTION.name}{ext}" for ext in tileindex.SHAPEFILE_PARTS)
    return sorted(geopandas.read_file(io.BytesIO(body)).frame_num)


COLLECTION = parse_key(georef(0)).collection


@pytest.fixture(scope="module")
def collection(services, tmp_path_factory):
    folder = tmp_path_factory.mktemp("converge")
    drop(COLLECTION)  # the bucket starts empty each session; so does this collection's index
    for i in range(3):
        upload_frame(folder, i)
    assert COLLECTION.name in pipeline.discover()
    first = run()
    assert first.state == "success", states(first)
    return folder


def test_footprints_are_the_valid_data_inside_the_bbox(collection):
    rows = table_rows()
    assert sorted(r["frame_num"] for r in rows.values()) == ["1", "2", "3"]
    for row in rows.values():
        assert row["inside"]
        assert row["points"] <= 65  # tens of vertices (a closed ring repeats its first point)
        # The collar (12 of 500-600 px on each side) and the reprojection skew are left out.
        assert 0.85 < row["share"] < 0.96


def test_getfeatureinfo_in_the_collar_of_an_edge_frame_answers_nothing(collection):
    pipeline.wait_for_mapfile(COLLECTION)
    minx, miny, maxx, maxy = frame_bounds(0)
    middle_y = (miny + maxy) / 2

    def frames_at(utm_x: float) -> str:
        (x,), (y,) = transform_points(UTM, "EPSG:3857", [utm_x], [middle_y])
        box = (x - 32, y - 32, x + 32, y + 32)  # 64 m around the point: its pixel is the centre one
        return wms.get_feature_info(os.environ["LS4_WMS_URL"], COLLECTION, box, 128, 128)

    assert "frame_num = '1'" in frames_at(minx + COLLAR + 20)  # in the photo
    assert "frame_num = '1'" not in frames_at(minx + COLLAR / 2)  # in the black collar, inside the bbox


def test_a_run_with_nothing_new_does_no_index_work(collection):
    before = generations()
    zip_modified = pipeline.last_modified([COLLECTION.tile_index_zip_key])
    again = run()
    assert again.state == "success"
    assert {task: state for task, state in states(again).items() if task != "wait_for_georef"} == {
        "plan": "success", "frame.compress": "skipped", "frame.overviews": "skipped", "frame.cog": "skipped",
        "frames_done": "success",  # an EmptyOperator: the scheduler marks it, no worker runs it
        "tile_index": "skipped", "collection_overview": "skipped", "mapfile": "skipped", "wms_served": "skipped",
        "preview": "skipped", "report": "skipped"}
    assert generations() == before
    assert pipeline.last_modified([COLLECTION.tile_index_zip_key]) == zip_modified


def test_a_failed_index_step_is_finished_by_the_next_plain_run(collection, monkeypatch):
    upload_frame(collection, 3)

    def broken(self, context):  # out of retries at once
        raise AirflowFailException("PostGIS went away")
    with monkeypatch.context() as patched:
        patched.setattr(TileIndexOperator, "execute", broken)
        failed = run()
    assert failed.state == "failed"
    assert states(failed)["frame.cog"] == "success" and states(failed)["tile_index"] == "failed"
    current, zip_shows, mapfile_shows = generations()
    assert zip_shows < current and mapfile_shows < current  # the downloads lag the table
    cog = parse_key(georef(3)).cog_key
    made = pipeline.last_modified([cog])

    repaired = run()
    assert repaired.state == "success", states(repaired)
    assert states(repaired)["frame.compress"] == "skipped"  # no raster work
    assert pipeline.last_modified([cog]) == made
    current, zip_shows, mapfile_shows = generations()
    assert zip_shows == mapfile_shows == current
    assert shapefile_frames() == ["1", "2", "3", "4"]


def test_rows_lost_from_the_table_are_made_again_from_the_cogs_without_raster_work(collection):
    cogs = sorted(table_rows())
    made = pipeline.last_modified(cogs)
    with engine().begin() as connection:
        connection.execute(text(f'DELETE FROM public."{COLLECTION.table}"'))
    repaired = run()
    assert repaired.state == "success", states(repaired)
    assert states(repaired)["frame.compress"] == "skipped"
    assert sorted(table_rows()) == cogs
    assert all(row["inside"] and row["share"] < 0.96 for row in table_rows().values())
    assert pipeline.last_modified(cogs) == made


def test_a_stray_object_under_cog_is_reported_once_and_stops_nothing(collection):
    stray = f"{ROOT}cog/notes.tif"
    pipeline.s3().put_object(Bucket=pipeline.bucket(), Key=stray, Body=b"rolls 2-3 rescanned in May")
    upload_frame(collection, 4)  # work for the same run
    # S3 lists modification times in whole seconds; an object from the second a
    # run began counts as new for the next run too, so let that second pass.
    time.sleep(1.1)
    first = run()
    assert first.state == "success", states(first)
    assert stray not in table_rows()
    assert parse_key(georef(4)).cog_key in table_rows()
    second = run()
    assert second.state == "success"
    notices = [n for n in pipeline.notifications() if n["key"] == stray]
    assert [n["subject"] for n in notices] == ["object under cog/ not made by ls4"]
    pipeline.s3().head_object(Bucket=pipeline.bucket(), Key=stray)  # never deleted: ls4 did not write it


def test_a_deleted_upload_leaves_the_cog_folder_the_table_and_the_shapefile(collection):
    gone = upload_frame(collection, 5)
    assert run().state == "success"
    cog = parse_key(gone).cog_key
    assert cog in table_rows() and "6" in shapefile_frames()
    pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=gone)
    after = run()
    assert after.state == "success", states(after)
    assert cog not in table_rows()
    assert "6" not in shapefile_frames()
    assert "Contents" not in pipeline.s3().list_objects_v2(Bucket=pipeline.bucket(), Prefix=cog)
    # The scan the user uploaded stays; the removal is notified once, with the fix.
    pipeline.s3().head_object(Bucket=pipeline.bucket(), Key=parse_key(gone).scanned_candidates()[0])
    notices = [n for n in pipeline.notifications() if n["subject"] == "georef upload deleted"]
    assert [n["key"] for n in notices] == [gone]
    assert "upload it again" in notices[0]["reason"]
    current, zip_shows, mapfile_shows = generations()
    assert zip_shows == mapfile_shows == current
    extent = transform_bounds(UTM, "EPSG:3857", *frame_bounds(5))
    assert not wms.get_feature_info(os.environ["LS4_WMS_URL"], COLLECTION, extent, 128, 128).count("frame_num")
