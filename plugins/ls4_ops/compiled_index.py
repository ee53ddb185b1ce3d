"""The compiled index: every collection's footprints in one GeoJSON file.

``geojson/compiled_historical_indexes.geojson`` (``layout.COMPILED_INDEX_KEY``)
holds one Feature per row of every catalogued tile-index table, in EPSG:4326
(RFC 7946), with the properties ``tablename``, ``collection`` and the
table's download links. It is written from PostGIS alone, streaming: the
archive (hundreds of collections of thousands of frames) is never held in
memory, and PostGIS builds each Feature's JSON.

The published file carries in its S3 metadata the *fingerprint* of the
catalog it shows (every table's name, title and generation), so a run
tells with one query and one HEAD whether there is anything to do.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ls4_ops import tileindex
from ls4_ops.layout import validate_identifier

# S3 metadata of the published file: the fingerprint of the tables it shows.
FINGERPRINT_METADATA = "ls4-index-fingerprint"
TABLE_PROPERTY = "tablename"
TITLE_PROPERTY = "collection"
WGS84_SRID = 4326
DECIMALS = 7  # 1e-7 degrees: about 1 cm
ROWS_PER_FETCH = 1000

_HEAD = '{"type": "FeatureCollection", "features": [\n'
_TAIL = "\n]}\n"


def _catalog(connection: Connection) -> list[tuple[str, str, int, bool]]:
    """Every catalogued table: name, title, generation, and whether the table exists."""
    if connection.execute(text("SELECT to_regclass(:catalog)"), {"catalog": tileindex.CATALOG}).scalar() is None:
        return []
    # Existence is part of the state: a table dropped behind the catalog's back leaves the file.
    return [tuple(entry) for entry in connection.execute(text(
        "SELECT table_name, title, generation, to_regclass(format('public.%I', table_name)) IS NOT NULL "
        f"FROM {tileindex.CATALOG} ORDER BY table_name"))]


def fingerprint(connection: Connection) -> str:
    """A digest of what the compiled index shows: it changes whenever any collection's
    table changes, appears or disappears (an empty or missing catalog has one fixed value)."""
    return hashlib.sha256(json.dumps(_catalog(connection)).encode()).hexdigest()


def write_geojson(connection: Connection, path: str) -> int:
    """Write every catalogued collection's features to ``path``; return how many.

    Run it in the same REPEATABLE READ transaction as :func:`fingerprint` so
    the fingerprint describes exactly what was written.
    """
    quote = connection.dialect.identifier_preparer.quote
    links = ", ".join(f"t.{quote(column)}" for column in tileindex.LINK_COLUMNS)
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write(_HEAD)
        for table, title, _generation, exists in _catalog(connection):
            if not exists:
                continue
            # The LATERAL subquery's columns are the Feature's properties; ordering
            # by the outer row keeps the output stable between runs. RFC 7946 wants
            # exterior rings counterclockwise, which footprints need not be.
            rows = connection.execution_options(yield_per=ROWS_PER_FETCH).execute(text(
                "SELECT ST_AsGeoJSON(f, :geometry, :decimals) "
                f"FROM public.{quote(validate_identifier(table))} AS t CROSS JOIN LATERAL ("
                f"SELECT CAST(:table AS text) AS {TABLE_PROPERTY}, CAST(:title AS text) AS {TITLE_PROPERTY}, "
                f"{links}, ST_ForcePolygonCCW(ST_Transform(t.{tileindex.GEOMETRY}, {WGS84_SRID})) "
                f"AS {tileindex.GEOMETRY}) AS f "
                f"ORDER BY t.{tileindex.KEY_COLUMN}"),
                {"table": table, "title": title, "geometry": tileindex.GEOMETRY, "decimals": DECIMALS})
            for (feature,) in rows:
                out.write(",\n" if count else "")
                out.write(feature)
                count += 1
        out.write(_TAIL)
    return count
