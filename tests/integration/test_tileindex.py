"""The tile index table on the real PostGIS: upserts, deletions, generations, concurrent writers, names."""

from __future__ import annotations

import multiprocessing

import geopandas
import pytest
import shapely
from shapely.geometry import box
from sqlalchemy import text

from include import local_stack
from ls4_ops import tileindex
from ls4_ops.layout import Collection, LayoutError, parse_key

PREFIX = "nc/indexville/usda_1970/frames/"
COLLECTION = parse_key(PREFIX + "georef/x.tif").collection


engine = local_stack.postgis_engine


def row(collection: Collection, name: str, etag: str = "e1", x: float = 0.0) -> dict:
    cog_key = collection.cog_key(name)
    footprint = box(x + 10, 10, x + 90, 90)
    return {
        tileindex.COG_KEY_COLUMN: cog_key, "location": f"/vsis3/ls4/{cog_key}", "src_srs": "EPSG:3857",
        "date": "19700101", "roll": "1", "frame_num": name, "dl_orig": "", "dl_georef": "https://pub/" + cog_key,
        "dl_index": "https://pub/idx.zip", tileindex.ETAG_COLUMN: etag,
        tileindex.BBOX_COLUMN: box(x, 0, x + 100, 100).wkt, tileindex.GEOMETRY: footprint.wkt,
    }


def read_table(connection, collection: Collection) -> geopandas.GeoDataFrame:
    """A collection's table as users see it, by ``gid``."""
    columns = ", ".join(f'"{column}"' for column in tileindex.COLUMNS)
    return geopandas.read_postgis(
        text(f'SELECT {tileindex.KEY_COLUMN}, {columns}, {tileindex.GEOMETRY} FROM public."{collection.table}" '
             f"ORDER BY {tileindex.KEY_COLUMN}"),
        connection, geom_col=tileindex.GEOMETRY, index_col=tileindex.KEY_COLUMN)


def drop(collection: Collection) -> None:
    with engine().begin() as connection:
        connection.execute(text(f'DROP TABLE IF EXISTS public."{collection.table}"'))
        if connection.execute(text("SELECT to_regclass(:c)"), {"c": tileindex.CATALOG}).scalar():
            connection.execute(text(f"DELETE FROM {tileindex.CATALOG} WHERE table_name = :t"),
                               {"t": collection.table})


@pytest.fixture
def fresh(services):
    drop(COLLECTION)
    yield COLLECTION
    drop(COLLECTION)


def test_upsert_replaces_a_row_by_cog_key_and_counts_generations(fresh):
    db = engine()
    with db.begin() as connection:
        assert tileindex.upsert(connection, fresh, [row(fresh, "1"), row(fresh, "2", x=100)]) == 1
    with db.begin() as connection:
        assert tileindex.upsert(connection, fresh, [row(fresh, "1", etag="e2")]) == 2
        assert tileindex.set_scan_links(connection, fresh, {fresh.cog_key("2"): "https://pub/scan"}) == 3
    with db.connect() as connection:
        assert tileindex.indexed(connection, fresh) == {
            fresh.cog_key("1"): tileindex.IndexedCog("e2", ""),
            fresh.cog_key("2"): tileindex.IndexedCog("e1", "https://pub/scan")}
        summary = tileindex.summary(connection, fresh)
        assert (summary.generation, summary.count, summary.bounds) == (3, 2, (10.0, 10.0, 190.0, 90.0))
        columns = connection.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = :t ORDER BY ordinal_position"),
            {"t": fresh.table}).scalars().all()
        assert columns[:2] == [tileindex.KEY_COLUMN, tileindex.COG_KEY_COLUMN]
        assert set(tileindex.COLUMNS) | {tileindex.ETAG_COLUMN, tileindex.BBOX_COLUMN, tileindex.GEOMETRY} \
            <= set(columns)
        # A primary key and a spatial index, as MapServer and QGIS expect.
        indexes = connection.execute(text("SELECT indexdef FROM pg_indexes WHERE tablename = :t"),
                                     {"t": fresh.table}).scalars().all()
        assert any("PRIMARY KEY" in d or f"({tileindex.KEY_COLUMN})" in d for d in indexes)
        assert any("gist" in d and tileindex.GEOMETRY in d for d in indexes)
        records = tileindex.read_records(connection, fresh)
    assert list(records.fields) == [tileindex.KEY_COLUMN, *tileindex.COLUMNS]
    assert [len(column) for column in records.fields.values()] == [2] * (len(tileindex.COLUMNS) + 1)
    assert shapely.from_wkb(records.footprints[0]).equals(box(10, 10, 90, 90))


def test_delete_removes_rows_and_an_empty_change_counts_nothing(fresh):
    db = engine()
    with db.begin() as connection:
        tileindex.upsert(connection, fresh, [row(fresh, str(i), x=100 * i) for i in range(3)])
        assert tileindex.upsert(connection, fresh, []) is None
        assert tileindex.delete(connection, fresh, [fresh.cog_key("1")]) == 2
    with db.connect() as connection:
        assert sorted(tileindex.indexed(connection, fresh)) == [fresh.cog_key("0"), fresh.cog_key("2")]
        assert tileindex.generation(connection, fresh) == 2


def test_a_table_of_the_old_rebuild_whole_layout_is_replaced(fresh):
    db = engine()
    with db.begin() as connection:
        connection.execute(text(f'CREATE TABLE public."{fresh.table}" (gid bigint PRIMARY KEY, location text, '
                                "geom geometry(Polygon, 3857))"))
    with db.connect() as connection:
        assert tileindex.indexed(connection, fresh) == {}  # planning sees no rows: they are made again
    with db.begin() as connection:
        tileindex.upsert(connection, fresh, [row(fresh, "1")])
    with db.connect() as connection:
        assert list(tileindex.indexed(connection, fresh)) == [fresh.cog_key("1")]


def _write_rows(names: list[str], etag: str) -> int:
    """One writer: a transaction per COG, as the frames' own tasks do."""
    db = engine()
    for name in names:
        with db.begin() as connection:
            tileindex.upsert(connection, COLLECTION, [row(COLLECTION, name, etag=etag, x=100 * int(name))])
    db.dispose()
    return len(names)


def test_concurrent_writers_lose_no_row(fresh):
    # Two processes on a collection with no table yet (both race to create
    # it), 40 COGs each, 10 of them written by both.
    first, second = [str(i) for i in range(40)], [str(i) for i in range(30, 70)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = [pool.apply_async(_write_rows, (names, etag)) for names, etag in ((first, "a"), (second, "b"))]
        assert [result.get(timeout=120) for result in results] == [40, 40]
    with engine().connect() as connection:
        rows = tileindex.indexed(connection, fresh)
        assert sorted(rows) == sorted(fresh.cog_key(str(i)) for i in range(70))
        assert {rows[fresh.cog_key(str(i))].source_etag for i in range(30, 40)} <= {"a", "b"}
        assert tileindex.generation(connection, fresh) == 80  # every transaction counted, none lost


@pytest.mark.parametrize("name", ['x"; DROP TABLE ls4.tile_indexes; --', "Robert'); DROP TABLE", "a b", "ünï",
                                  "x" * 64])
def test_table_names_from_keys_are_validated_before_any_sql(services, name):
    collection = Collection("nc", name, "ams", "1960", "frames")
    with engine().begin() as connection:
        with pytest.raises(ValueError, match="not a valid ls4 identifier"):
            tileindex.upsert(connection, collection, [row(COLLECTION, "1")])
        with pytest.raises(ValueError, match="not a valid ls4 identifier"):
            tileindex.indexed(connection, collection)
    # And such folders never become collections in the first place.
    with pytest.raises(LayoutError):
        parse_key(f"nc/{name}/ams_1960/frames/georef/a.tif")
