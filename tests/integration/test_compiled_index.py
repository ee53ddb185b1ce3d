"""The compiled index (``ls4_compiled_index``) on the real PostGIS and S3.

SPEC, scheduled jobs: "all collections' indexes in one GeoJSON in EPSG:4326
with tablename, collection, dl_orig, dl_georef, dl_index, at
geojson/compiled_historical_indexes.geojson, public-read"; a run with nothing
changed does no work. Other tests share the database and the bucket, so the
file is checked against whatever is catalogued when it is read.
"""

from __future__ import annotations

import subprocess

import geopandas as gpd
import pytest
import shapely
from shapely import wkt
from shapely.affinity import translate
from sqlalchemy import text

from ls4_ops import compiled_index, tileindex
from ls4_ops.layout import COMPILED_INDEX_KEY, parse_key
from tests.integration import pipeline
from tests.integration.test_tileindex import drop, engine, read_table, row

FRAMES = parse_key("nc/compiledville/usda_1970/frames/georef/x.tif").collection
SHEETS = parse_key("bw/compiledville/ams_1961/index/georef/x.tif").collection
OURS = (FRAMES, SHEETS)
AUSTIN = (-10880000.0, 3540000.0)  # EPSG:3857, where the archive's photos are
PROPERTIES = ["tablename", "collection", "dl_orig", "dl_georef", "dl_index"]


def frame(collection, number: int, etag: str = "e1") -> dict:
    """``row()`` with its footprint and box moved from the origin to Austin, TX; the
    footprint clockwise, as a traced mask can be (GeoJSON wants it the other way)."""
    moved = row(collection, str(number), etag, x=100.0 * number)
    for column in (tileindex.GEOMETRY, tileindex.BBOX_COLUMN):
        moved[column] = translate(wkt.loads(moved[column]), *AUSTIN).wkt
    moved[tileindex.GEOMETRY] = shapely.orient_polygons(wkt.loads(moved[tileindex.GEOMETRY]), exterior_cw=True).wkt
    return moved


def upsert(collection, rows) -> None:
    with engine().begin() as connection:
        tileindex.upsert(connection, collection, rows)


@pytest.fixture
def collections(services):
    for collection in OURS:
        drop(collection)
    yield OURS
    for collection in OURS:
        drop(collection)


def current_fingerprint() -> str:
    with engine().connect() as connection:
        return compiled_index.fingerprint(connection)


def test_the_fingerprint_changes_with_any_table_and_only_then(collections):
    upsert(FRAMES, [frame(FRAMES, 1)])  # the catalog exists from here on, whichever test ran first
    drop(FRAMES)
    empty = []
    with engine().connect() as connection:
        for change in (f"DELETE FROM {tileindex.CATALOG}", f"ALTER TABLE {tileindex.CATALOG} RENAME TO gone"):
            with connection.begin() as transaction:  # rolled back: other tests share the catalog
                connection.execute(text(change))
                empty.append(compiled_index.fingerprint(connection))
                transaction.rollback()
    assert empty[0] == empty[1]  # an empty catalog and none at all both show nothing

    seen = [current_fingerprint()]
    upsert(FRAMES, [frame(FRAMES, 1)])  # a collection appears
    seen.append(current_fingerprint())
    assert seen[-1] == current_fingerprint()  # reading changes nothing
    upsert(FRAMES, [frame(FRAMES, 1, etag="e2")])  # a row is replaced
    seen.append(current_fingerprint())
    with engine().begin() as connection:  # a table disappears behind the catalog's back
        connection.execute(text(f"DROP TABLE public.{FRAMES.table}"))
    seen.append(current_fingerprint())
    drop(FRAMES)  # ... and its catalog entry
    seen.append(current_fingerprint())
    assert len(set(seen)) == 4 and seen[0] == seen[-1] and empty[0] not in seen[1:-1]


def compile_run(expect: str):
    run = pipeline.load_dags("ls4_compiled_index").dag.test()
    assert run.state == "success", run
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"compile": expect}
    return pipeline.s3().head_object(Bucket=pipeline.bucket(), Key=COMPILED_INDEX_KEY)


def download(tmp_path) -> str:
    path = str(tmp_path / "compiled.geojson")
    pipeline.s3().download_file(pipeline.bucket(), COMPILED_INDEX_KEY, path)
    return path


def assert_matches_the_tables(path: str) -> None:
    """One feature per row of every catalogued table, in table then key order; ours in full detail."""
    compiled = gpd.read_file(path)
    assert compiled.crs.to_epsg() == 4326
    assert list(compiled.columns) == [*PROPERTIES, "geometry"]
    with engine().connect() as connection:
        catalog = connection.execute(text(
            f"SELECT table_name, title FROM {tileindex.CATALOG} "
            "WHERE to_regclass(format('public.%I', table_name)) IS NOT NULL ORDER BY table_name")).all()
        counts = {table: connection.execute(text(f'SELECT count(*) FROM public."{table}"')).scalar()
                  for table, _ in catalog}
        ours = {c.table: read_table(connection, c).to_crs(4326) for c in OURS}
    assert list(compiled.tablename.unique()) == [table for table, count in counts.items() if count]
    assert compiled.tablename.value_counts().to_dict() == {t: n for t, n in counts.items() if n}
    assert dict(compiled[["tablename", "collection"]].drop_duplicates().values) == \
        {table: title for table, title in catalog if counts[table]}
    for table, expected in ours.items():
        features = compiled[compiled.tablename == table].reset_index(drop=True)
        expected = expected.reset_index(drop=True)
        assert features[PROPERTIES[2:]].equals(expected[PROPERTIES[2:]])
        # Transformed by PostGIS for the file, by pyproj here; 7 decimals in the file.
        # Exterior rings counterclockwise (RFC 7946), so vertex for vertex equal to those reoriented.
        counterclockwise = gpd.GeoSeries(shapely.orient_polygons(expected.geometry.values), crs=4326)
        assert features.geometry.geom_equals_exact(counterclockwise, tolerance=1e-6).all()


def test_the_hourly_dag_publishes_every_collection_and_only_when_something_changed(airflow_db, collections,
                                                                                  tmp_path):
    upsert(FRAMES, [frame(FRAMES, n) for n in range(3)])
    upsert(SHEETS, [frame(SHEETS, n) for n in range(2)])
    pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=COMPILED_INDEX_KEY)  # from an earlier test

    written = compile_run("success")
    assert written["ContentType"] == "application/geo+json"
    assert written["Metadata"][compiled_index.FINGERPRINT_METADATA] == current_fingerprint()
    assert pipeline.readable_by_anyone(COMPILED_INDEX_KEY)
    path = download(tmp_path)
    assert_matches_the_tables(path)
    # QGIS opens it through GDAL's GeoJSON driver.
    info = subprocess.run(["ogrinfo", "-ro", "-so", "-al", path], check=True, capture_output=True,
                          text=True).stdout
    total = len(gpd.read_file(path))
    assert f"Feature Count: {total}" in info and "tablename: String" in info

    unchanged = compile_run("skipped")
    assert (unchanged["ETag"], unchanged["LastModified"]) == (written["ETag"], written["LastModified"])

    with engine().begin() as connection:
        tileindex.set_scan_links(connection, SHEETS, {SHEETS.cog_key("1"): "https://pub/scan.tif"})
    rewritten = compile_run("success")
    assert rewritten["ETag"] != written["ETag"]
    path = download(tmp_path)
    assert_matches_the_tables(path)
    sheets = gpd.read_file(path, where=f"tablename = '{SHEETS.table}'")
    assert list(sheets.dl_orig) == ["", "https://pub/scan.tif"]
