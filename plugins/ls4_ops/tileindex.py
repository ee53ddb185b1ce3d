"""The tile index of a collection: one footprint feature per COG.

Written as a shapefile plus its zip (for download) and as a PostGIS table
(for MapServer). Both are replaced atomically: readers see the old index or
the new one, never half of one.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable

import geopandas as gpd
import rasterio
from shapely.geometry import box
from sqlalchemy import text
from sqlalchemy.engine import Engine

from ls4_ops.layout import Collection, OriginalScans, frame_attributes, needs_scan, parse_key, validate_identifier
from ls4_ops.settings import Settings
from ls4_ops.s3env import vsis3_path

INDEX_CRS = "EPSG:3857"
COLUMNS = ["location", "src_srs", "date", "roll", "frame_num", "dl_orig", "dl_georef", "dl_index"]
GEOMETRY = "geom"
KEY_COLUMN = "gid"
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
STAGING_SCHEMA = "ls4_staging"


def footprint(path: str):
    """Footprint polygon (EPSG:3857) and CRS of a COG."""
    with rasterio.open(path) as dataset:
        crs = dataset.crs.to_string() if dataset.crs else ""
        return box(*dataset.bounds), crs


def index_record(
    collection: Collection,
    cog_key: str,
    settings: Settings,
    scans: OriginalScans,
    read_footprint: Callable[[str], tuple] = footprint,
) -> dict:
    """The index feature of one COG; ``scans`` are the collection's original scans."""
    upload = parse_key(cog_key)
    location = vsis3_path(settings.bucket, cog_key)
    geometry, src_srs = read_footprint(location)
    scan = ""
    if needs_scan(collection):
        scan = scans.find(upload) or ""
    return {
        "location": location,
        "src_srs": src_srs,
        **frame_attributes(collection, upload.stem).as_record(),
        "dl_orig": settings.public_link(scan) if scan else "",
        "dl_georef": settings.public_link(cog_key),
        "dl_index": settings.public_link(collection.tile_index_zip_key),
        GEOMETRY: geometry,
    }


def build_index(records: Iterable[dict]) -> gpd.GeoDataFrame:
    records = sorted(records, key=lambda record: record["location"])
    frame = gpd.GeoDataFrame(records, columns=[*COLUMNS, GEOMETRY], geometry=GEOMETRY, crs=INDEX_CRS)
    frame.index.name = KEY_COLUMN
    return frame


def write_shapefile(index: gpd.GeoDataFrame, collection: Collection, directory: str) -> dict[str, str]:
    """Write the shapefile and its zip; return bucket key -> local file."""
    base = os.path.join(directory, collection.name)
    index.to_file(f"{base}.shp", driver="ESRI Shapefile", engine="pyogrio", encoding="UTF-8")
    files = {collection.tile_index_key(ext): f"{base}{ext}" for ext in SHAPEFILE_PARTS
             if os.path.exists(f"{base}{ext}")}
    zip_path = os.path.join(directory, os.path.basename(collection.tile_index_zip_key))
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files.values():
            archive.write(path, os.path.basename(path))
    files[collection.tile_index_zip_key] = zip_path
    return files


def load_postgis(index: gpd.GeoDataFrame, engine: Engine, table: str) -> None:
    """Replace table ``table`` with ``index`` in one transaction."""
    table = validate_identifier(table)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{STAGING_SCHEMA}"'))
    index.to_postgis(table, engine, schema=STAGING_SCHEMA, if_exists="replace", index=True,
                     index_label=KEY_COLUMN)
    with engine.begin() as connection:
        connection.execute(text(f'ALTER TABLE "{STAGING_SCHEMA}"."{table}" ADD PRIMARY KEY ("{KEY_COLUMN}")'))
        connection.execute(text(f'DROP TABLE IF EXISTS public."{table}"'))
        connection.execute(text(f'ALTER TABLE "{STAGING_SCHEMA}"."{table}" SET SCHEMA public'))


def extent(index: gpd.GeoDataFrame, pad_fraction: float = 0.05) -> list[float]:
    """Bounds of the index, padded so edge frames are not flush with the map edge."""
    minx, miny, maxx, maxy = index.total_bounds
    pad = max(maxx - minx, maxy - miny) * pad_fraction or 100.0
    return [minx - pad, miny - pad, maxx + pad, maxy + pad]
