"""The tile index of a collection: one row per COG, in PostGIS and as a shapefile.

This module owns the index schema: the mapfile, the compiled index, the
benchmarks and the tests import the names below and never retype them.

The PostGIS table ``{collection}`` is written incrementally. A COG's row is
upserted, keyed by the COG's key, in the same transaction that bumps the
collection's *generation* in the catalog table ``ls4.tile_indexes``; rows
whose upload is gone are deleted the same way. Nothing rebuilds the table.
The shapefile and its zip, which users download, are written from the table
(no COG is opened) and carry in their S3 metadata the generation they show,
as does the mapfile: one HEAD tells a run whether they are behind the table.

Table names come from keys: each is checked by ``validate_identifier`` and
quoted wherever it reaches SQL; every value is a bound parameter.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ls4_ops.layout import Collection, frame_attributes, parse_key, validate_identifier
from ls4_ops.settings import Settings

INDEX_SRID = 3857
INDEX_CRS = f"EPSG:{INDEX_SRID}"
# Download links: the original scan, the COG, the index zip.
LINK_COLUMNS = ["dl_orig", "dl_georef", "dl_index"]
# What users get in the table, the shapefile and GetFeatureInfo (SPEC step 7).
COLUMNS = ["location", "src_srs", "date", "roll", "frame_num", *LINK_COLUMNS]
GEOMETRY = "geom"  # the valid-data footprint (MultiPolygon)
KEY_COLUMN = "gid"  # MapServer's unique feature id
COG_KEY_COLUMN = "cog_key"  # what an upsert is keyed by
ETAG_COLUMN = "source_etag"  # the upload version the COG was made from
BBOX_COLUMN = "bbox"
CATALOG_SCHEMA = "ls4"
CATALOG = f"{CATALOG_SCHEMA}.tile_indexes"
# Where each change put or took a footprint (its bbox), by generation: what
# the collection overview must draw again.
CHANGES = f"{CATALOG_SCHEMA}.index_changes"
# S3 metadata of the shapefile zip and the mapfile: the generation they show.
GENERATION_METADATA = "ls4-index-generation"
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
# Overlapping frames: the later key is drawn over the earlier, by MapServer
# (its tile index query) and in the collection overview alike.
DRAW_ORDER = COG_KEY_COLUMN
# One lock for creating ls4's tables: concurrent CREATE ... IF NOT EXISTS can
# still collide in PostgreSQL's catalogs.
DDL_LOCK = "ls4.tile_index.ddl"


@dataclass(frozen=True)
class IndexedCog:
    """A row of the index, as much of it as planning a run needs."""

    source_etag: str
    dl_orig: str


@dataclass(frozen=True)
class CatalogEntry:
    """A collection's line in the catalog."""

    generation: int  # changes of the table so far
    overview_generation: int  # the generation the collection overview shows
    overview_key: str  # the overview COG MapServer reads ("" before the first)


@dataclass(frozen=True)
class IndexSummary:
    generation: int
    count: int
    bounds: tuple[float, float, float, float] | None  # of all footprints; None when empty


def generation_shown(metadata: Mapping[str, str] | None, required: Mapping[str, str] | None = None) -> int | None:
    """The generation a published object shows by its S3 metadata; None when it is missing,
    shows none, or lacks one of the ``required`` metadata values (an older format)."""
    value = (metadata or {}).get(GENERATION_METADATA, "")
    if not value.isdigit() or any(metadata.get(key) != wanted for key, wanted in (required or {}).items()):
        return None
    return int(value)


def _quoted(connection: Connection, table: str) -> str:
    return connection.dialect.identifier_preparer.quote(validate_identifier(table))


def _column_list(columns: Iterable[str]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


def scan_link(settings: Settings, scan_key: str | None) -> str:
    """``dl_orig``: the public URL of the original scan, empty when there is none."""
    return settings.public_link(scan_key) if scan_key else ""


def location(settings: Settings, cog_key: str, cog_etag: str) -> str:
    """What MapServer opens: the COG's public URL, with its version.

    MapServer's FastCGI processes live long and GDAL caches what it read of
    each file by its name: a replaced COG gets a new name (a query string S3
    ignores), so no stale header or block of the old one is ever served, with
    GDAL's cache on.
    """
    return f"/vsicurl/{settings.public_link(cog_key)}?v={cog_etag.strip(chr(34))}"


def index_row(cog, collection: Collection, item: Mapping, settings: Settings) -> dict:
    """The row of a COG (an open rasterio dataset, local or over S3) made from plan item ``item``,
    whose ``cog_etag`` is the ETag the COG has in the bucket.

    The footprint comes from a small overview level of the COG's mask; no
    pixel is read.
    """
    from shapely.geometry import box

    from ls4_ops.footprint import footprint

    cog_key = item["cog_key"]
    return {
        COG_KEY_COLUMN: cog_key,
        "location": location(settings, cog_key, item["cog_etag"]),
        "src_srs": cog.crs.to_string() if cog.crs else "",
        **frame_attributes(collection, parse_key(cog_key).stem).as_record(),
        "dl_orig": scan_link(settings, item["scan"]),
        "dl_georef": settings.public_link(cog_key),
        "dl_index": settings.public_link(collection.tile_index_zip_key),
        ETAG_COLUMN: item["etag"],
        BBOX_COLUMN: box(*cog.bounds).wkt,
        GEOMETRY: footprint(cog).wkt,
    }


# --- the table ------------------------------------------------------------------------------

def _has_table(connection: Connection, table: str) -> bool:
    """Whether the collection has a table of this layout and the catalog its current one.

    A table made by ls4 before incremental indexing has no ``cog_key`` column
    and is replaced; a catalog from before the collection overview has no
    change log and is completed.
    """
    return bool(connection.execute(text(
        "SELECT to_regclass(:changes) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute "
        "WHERE attrelid = to_regclass(:table) AND attname = :column AND NOT attisdropped)"),
        {"changes": CHANGES, "table": f"public.{_quoted(connection, table)}",
         "column": COG_KEY_COLUMN}).scalar())


def _create_catalog(connection: Connection) -> None:
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {CATALOG_SCHEMA}"))
    connection.execute(text(
        f"CREATE TABLE IF NOT EXISTS {CATALOG} (table_name text PRIMARY KEY, title text NOT NULL, "
        "generation bigint NOT NULL DEFAULT 0, updated timestamptz NOT NULL DEFAULT now())"))
    connection.execute(text(
        f"ALTER TABLE {CATALOG} ADD COLUMN IF NOT EXISTS overview_generation bigint NOT NULL DEFAULT 0, "
        "ADD COLUMN IF NOT EXISTS overview_key text NOT NULL DEFAULT ''"))
    connection.execute(text(
        f"CREATE TABLE IF NOT EXISTS {CHANGES} (table_name text NOT NULL, generation bigint NOT NULL, "
        f"area geometry(Polygon, {INDEX_SRID}) NOT NULL)"))
    connection.execute(text(f"CREATE INDEX IF NOT EXISTS index_changes_by_table ON {CHANGES} "
                            "(table_name, generation)"))


def create_once(connection: Connection, table: str, columns: str) -> None:
    """Create ``table`` (in the catalog's schema) with ``columns`` unless it exists, in the
    caller's transaction; writers creating it at once wait for each other's DDL."""
    if connection.execute(text("SELECT to_regclass(:table)"), {"table": table}).scalar() is not None:
        return
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:lock))"), {"lock": DDL_LOCK})
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {CATALOG_SCHEMA}"))
    connection.execute(text(f"CREATE TABLE IF NOT EXISTS {table} ({columns})"))


def ensure_table(connection: Connection, collection: Collection) -> None:
    """Create the collection's table and its catalog entry unless they exist.

    Runs in the caller's transaction. A table of the pre-incremental layout
    is dropped and created anew: the next run refills it from the COGs.
    """
    if _has_table(connection, collection.table):
        return
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:lock))"), {"lock": DDL_LOCK})
    if _has_table(connection, collection.table):
        return  # another writer created it while this one waited
    _create_catalog(connection)
    name = _quoted(connection, collection.table)
    if not connection.execute(text("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
                                   "to_regclass(:table) AND attname = :column AND NOT attisdropped)"),
                              {"table": f"public.{name}", "column": COG_KEY_COLUMN}).scalar():
        connection.execute(text(f"DROP TABLE IF EXISTS public.{name}"))
        connection.execute(text(
            f"CREATE TABLE public.{name} ("
            f"{KEY_COLUMN} integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            f"{COG_KEY_COLUMN} text NOT NULL UNIQUE, "
            + "".join(f'"{column}" text NOT NULL, ' for column in COLUMNS)
            + f"{ETAG_COLUMN} text NOT NULL, "
            f"{BBOX_COLUMN} geometry(Polygon, {INDEX_SRID}) NOT NULL, "
            f"{GEOMETRY} geometry(MultiPolygon, {INDEX_SRID}) NOT NULL, "
            "updated timestamptz NOT NULL DEFAULT now())"))
        connection.execute(text(f"CREATE INDEX ON public.{name} USING gist ({GEOMETRY})"))
    connection.execute(text(
        f"INSERT INTO {CATALOG} (table_name, title) VALUES (:table, :title) "
        "ON CONFLICT (table_name) DO UPDATE SET title = EXCLUDED.title"),
        {"table": collection.table, "title": collection.title})


def _bump(connection: Connection, table: str) -> int:
    """Count one change of the table; row-locks its catalog entry until the transaction ends."""
    return connection.execute(text(
        f"UPDATE {CATALOG} SET generation = generation + 1, updated = now() "
        "WHERE table_name = :table RETURNING generation"), {"table": table}).scalar_one()


def _log_areas(connection: Connection, collection: Collection, generation: int, cog_keys: list[str]) -> None:
    """Log where these COGs' rows are now (before a change: where they were)."""
    connection.execute(text(
        f"INSERT INTO {CHANGES} (table_name, generation, area) SELECT :table, :generation, {BBOX_COLUMN} "
        f"FROM public.{_quoted(connection, collection.table)} WHERE {COG_KEY_COLUMN} = ANY(:keys)"),
        {"table": collection.table, "generation": generation, "keys": cog_keys})


def upsert(connection: Connection, collection: Collection, rows: Iterable[Mapping]) -> int | None:
    """Insert or replace rows by COG key, in the caller's transaction; return the new generation."""
    rows = list(rows)
    if not rows:
        return None
    ensure_table(connection, collection)
    generation = _bump(connection, collection.table)
    keys = [row[COG_KEY_COLUMN] for row in rows]
    _log_areas(connection, collection, generation, keys)  # a replaced COG may have moved
    columns = [COG_KEY_COLUMN, *COLUMNS, ETAG_COLUMN]
    values = [f":{column}" for column in columns] + [
        f"ST_GeomFromText(:{BBOX_COLUMN}, {INDEX_SRID})", f"ST_Multi(ST_GeomFromText(:{GEOMETRY}, {INDEX_SRID}))"]
    names = [*columns, BBOX_COLUMN, GEOMETRY]
    updates = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in names[1:])
    connection.execute(text(
        f"INSERT INTO public.{_quoted(connection, collection.table)} ({_column_list(names)}) "
        f"VALUES ({', '.join(values)}) "
        f"ON CONFLICT ({COG_KEY_COLUMN}) DO UPDATE SET {updates}, updated = now()"), rows)
    _log_areas(connection, collection, generation, keys)
    return generation


def set_scan_links(connection: Connection, collection: Collection, links: Mapping[str, str]) -> int | None:
    """Set ``dl_orig`` of rows by COG key (a scan uploaded, or removed, after its COG was made)."""
    if not links or not _has_table(connection, collection.table):
        return None
    connection.execute(text(
        f"UPDATE public.{_quoted(connection, collection.table)} SET dl_orig = :dl_orig, updated = now() "
        f"WHERE {COG_KEY_COLUMN} = :cog_key"),
        [{"cog_key": key, "dl_orig": link} for key, link in links.items()])
    return _bump(connection, collection.table)


def delete(connection: Connection, collection: Collection, cog_keys: Iterable[str]) -> int | None:
    """Delete the rows of these COGs, in the caller's transaction."""
    cog_keys = list(cog_keys)
    if not cog_keys or not _has_table(connection, collection.table):
        return None
    generation = _bump(connection, collection.table)
    _log_areas(connection, collection, generation, cog_keys)
    connection.execute(text(
        f"DELETE FROM public.{_quoted(connection, collection.table)} WHERE {COG_KEY_COLUMN} = ANY(:keys)"),
        {"keys": cog_keys})
    return generation


def indexed(connection: Connection, collection: Collection) -> dict[str, IndexedCog]:
    """The indexed COGs by key (none when the collection has no table of this layout)."""
    if not _has_table(connection, collection.table):
        return {}
    result = connection.execute(text(
        f"SELECT {COG_KEY_COLUMN}, {ETAG_COLUMN}, dl_orig FROM public.{_quoted(connection, collection.table)}"))
    return {key: IndexedCog(etag, dl_orig) for key, etag, dl_orig in result}


def catalog_entry(connection: Connection, collection: Collection) -> CatalogEntry:
    """The collection's catalog line (all zero before its table exists)."""
    if not _has_table(connection, collection.table):
        return CatalogEntry(0, 0, "")
    return CatalogEntry(*connection.execute(text(
        f"SELECT generation, overview_generation, overview_key FROM {CATALOG} WHERE table_name = :table"),
        {"table": collection.table}).one())


def generation(connection: Connection, collection: Collection) -> int:
    """How many changes the table has seen (0 before it exists)."""
    return catalog_entry(connection, collection).generation


def summary(connection: Connection, collection: Collection) -> IndexSummary:
    if not _has_table(connection, collection.table):
        return IndexSummary(0, 0, None)
    count, *bounds = connection.execute(text(
        "SELECT n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
        f"(SELECT count(*) AS n, ST_Extent({GEOMETRY}) AS e "
        f"FROM public.{_quoted(connection, collection.table)}) AS x")).one()
    return IndexSummary(generation(connection, collection), count, tuple(bounds) if count else None)


def changed_areas(connection: Connection, collection: Collection, since: int) -> list[tuple]:
    """Bounds of every area a change after generation ``since`` touched."""
    return [tuple(bounds) for bounds in connection.execute(text(
        f"SELECT ST_XMin(area), ST_YMin(area), ST_XMax(area), ST_YMax(area) FROM {CHANGES} "
        "WHERE table_name = :table AND generation > :since"), {"table": collection.table, "since": since})]


def cogs_within(connection: Connection, collection: Collection, bounds: tuple) -> list[str]:
    """Keys of the COGs whose footprint meets ``bounds``, in the order MapServer draws them."""
    return list(connection.execute(text(
        f"SELECT {COG_KEY_COLUMN} FROM public.{_quoted(connection, collection.table)} "
        f"WHERE {GEOMETRY} && ST_MakeEnvelope(:minx, :miny, :maxx, :maxy, {INDEX_SRID}) "
        f"ORDER BY {DRAW_ORDER}"), dict(zip(("minx", "miny", "maxx", "maxy"), bounds))).scalars())


def set_overview(connection: Connection, collection: Collection, generation: int, key: str) -> None:
    """Record that the overview ``key`` shows the table at ``generation``; forget older changes."""
    connection.execute(text(f"UPDATE {CATALOG} SET overview_generation = :generation, overview_key = :key "
                            "WHERE table_name = :table"),
                       {"table": collection.table, "generation": generation, "key": key})
    connection.execute(text(f"DELETE FROM {CHANGES} WHERE table_name = :table AND generation <= :generation"),
                       {"table": collection.table, "generation": generation})


@dataclass(frozen=True)
class ShapefileRecords:
    """The rows of a table as the shapefile takes them: one array per column, footprints as WKB."""

    fields: dict  # column name -> numpy array
    footprints: object  # numpy array of WKB


def read_records(connection: Connection, collection: Collection) -> ShapefileRecords:
    """The users' columns and footprints of every row (the table must exist), in COG key order.

    Plain arrays, not a GeoDataFrame: at a thousand frames that halves the
    cost of writing the shapefile, which every changed collection pays.
    """
    import numpy as np

    columns = [KEY_COLUMN, *COLUMNS]
    rows = connection.execute(text(
        f"SELECT {_column_list(columns)}, ST_AsBinary({GEOMETRY}) "
        f"FROM public.{_quoted(connection, collection.table)} ORDER BY {COG_KEY_COLUMN}")).all()
    values = list(zip(*rows)) or [()] * (len(columns) + 1)
    fields = {KEY_COLUMN: np.asarray(values[0], dtype="int64")}
    fields.update({column: np.asarray(value, dtype=object) for column, value in zip(COLUMNS, values[1:-1])})
    return ShapefileRecords(fields, np.asarray([bytes(wkb) for wkb in values[-1]], dtype=object))


def write_shapefile(records: ShapefileRecords, collection: Collection, directory: str) -> dict[str, str]:
    """Write the shapefile and its zip; return bucket key -> local file, the zip last."""
    from pyogrio.raw import write

    base = os.path.join(directory, collection.name)
    # Text fields get OGR's default width, widened for longer values. (RESIZE=YES
    # would shrink them to the longest value: a .dbf a third the size, but it
    # doubles the write time, and the zip users download is compressed anyway.)
    write(f"{base}.shp", geometry=records.footprints, field_data=list(records.fields.values()),
          fields=list(records.fields), geometry_type="MultiPolygon", crs=INDEX_CRS, driver="ESRI Shapefile",
          encoding="UTF-8")
    files = {collection.tile_index_key(ext): f"{base}{ext}" for ext in SHAPEFILE_PARTS
             if os.path.exists(f"{base}{ext}")}
    zip_path = os.path.join(directory, os.path.basename(collection.tile_index_zip_key))
    # Level 1: a quarter bigger than the default level, three times faster.
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in files.values():
            archive.write(path, os.path.basename(path))
    files[collection.tile_index_zip_key] = zip_path
    return files


def extent(bounds: tuple[float, float, float, float], pad_fraction: float = 0.05) -> list[float]:
    """``bounds`` padded, so edge frames are not flush with the map edge."""
    minx, miny, maxx, maxy = bounds
    pad = max(maxx - minx, maxy - miny) * pad_fraction or 100.0
    return [minx - pad, miny - pad, maxx + pad, maxy + pad]
