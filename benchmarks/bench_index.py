"""What one new upload costs the tile index when its collection already holds N frames.

On the project's own S3 emulator and PostGIS (a stack of its own, state in
``.state/bench``), for N = 10, 100 and 1000, several uploads each:

* ``upsert``: what the frame's COG task adds for the index: the footprint
  from the mask of the COG it has just written, and its row upserted in one
  transaction (with the generation bump);
* ``plan``: what planning reads of the index: the rows (COG key, ETag,
  scan link), the generation, and a HEAD of the published zip and mapfile;
* ``shapefile``: the index task: the shapefile and its zip written from the
  table (no COG opened) and uploaded.

The per-upload cost is their sum (median over the uploads). The previous
design, which re-read every COG over S3 and replaced the table and the
shapefile whole, is measured in the same run for comparison. Ends with:
``index: per-upload-ms n10=<a> n100=<b> n1000=<c>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "plugins"), ROOT]

from include import local_stack  # noqa: E402

BENCH_STACK = local_stack.bench_stack("bench", 21000)
SERVICES = ["s3", "postgis"]
local_stack.use(BENCH_STACK)

import geopandas as gpd  # noqa: E402
import rasterio  # noqa: E402
from shapely import affinity  # noqa: E402
from shapely.geometry import box  # noqa: E402
from sqlalchemy import text  # noqa: E402

from include.synthetic import make_frame  # noqa: E402
from ls4_ops import raster, tileindex  # noqa: E402
from ls4_ops.hooks import Ls4S3Hook  # noqa: E402
from ls4_ops.layout import Collection  # noqa: E402
from ls4_ops.operators import TileIndexOperator  # noqa: E402
from ls4_ops.s3env import S3Endpoint, vsis3_path  # noqa: E402
from ls4_ops.settings import Settings  # noqa: E402

OUT = os.path.join(ROOT, "benchmarks", "out", "index")
SIZES = (10, 100, 1000)
FRAME_PX = 2000  # the upload's frame (1 m pixels, UTM, with a scan collar)
FILLER_PX = 256  # the frames already in the collection: only their headers are read
STEP_M = 2200.0  # frames side by side


def made_cog(name: str, size: int) -> str:
    """A COG as ls4 writes it, from a collared frame in UTM (kept between runs)."""
    path = os.path.join(OUT, f"{name}.tif")
    if not os.path.exists(path):
        os.makedirs(OUT, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            source, compressed = os.path.join(scratch, "upload.tif"), os.path.join(scratch, "compressed.tif")
            make_frame(source, "nc", size, size, crs="EPSG:26914",
                       bounds=(620_000, 3_349_000, 620_000 + size, 3_349_000 + size), collar=max(8, size // 60))
            raster.compress(source, compressed, "nc")
            raster.add_overviews(compressed)
            raster.to_cog(compressed, path, "nc")
    return path


def item(collection: Collection, i: int) -> dict:
    return {"key": f"{collection.prefix('georef')}f{i}.tif", "etag": f"etag{i}",
            "cog_key": collection.cog_key(f"f{i}"), "scan": ""}


def row_at(cog, collection: Collection, i: int, settings: Settings) -> dict:
    """The index row of COG ``cog`` as frame ``i``: shifted to its own place, as in a real collection."""
    row = tileindex.index_row(cog, collection, item(collection, i), settings)
    for column in (tileindex.GEOMETRY, tileindex.BBOX_COLUMN):
        row[column] = affinity.translate(gpd.GeoSeries.from_wkt([row[column]])[0], xoff=i * STEP_M).wkt
    return row


def fill(db, collection: Collection, count: int, filler: str, settings: Settings) -> None:
    """A collection of ``count`` indexed frames, its COGs in the bucket."""
    client = S3Endpoint.from_env().boto3_client()
    with db.begin() as connection:
        connection.execute(text(f'DROP TABLE IF EXISTS public."{collection.table}"'))
        if connection.execute(text("SELECT to_regclass(:c)"), {"c": tileindex.CATALOG}).scalar():
            connection.execute(text(f"DELETE FROM {tileindex.CATALOG} WHERE table_name = :t"),
                               {"t": collection.table})
    with rasterio.open(filler) as cog:
        rows = [row_at(cog, collection, i, settings) for i in range(count)]
    with db.begin() as connection:
        tileindex.upsert(connection, collection, rows)
    with open(filler, "rb") as handle:
        body = handle.read()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=settings.bucket, Key=item(collection, i)["cog_key"],
                                                  Body=body), range(count)))


def one_upload(db, collection: Collection, i: int, upload_cog: str, settings: Settings,
               index_task: TileIndexOperator, s3: Ls4S3Hook) -> dict[str, float]:
    timings = {}
    start = time.perf_counter()
    with rasterio.open(upload_cog) as cog:
        row = row_at(cog, collection, i, settings)
    with db.begin() as connection:
        tileindex.upsert(connection, collection, [row])
    timings["upsert"] = time.perf_counter() - start

    start = time.perf_counter()
    with db.connect() as connection:
        tileindex.indexed(connection, collection)
        tileindex.generation(connection, collection)
    for key in (collection.tile_index_zip_key, collection.mapfile_key, collection.preview_key):
        tileindex.generation_shown(s3.metadata(settings.bucket, key))
    timings["plan"] = time.perf_counter() - start

    start = time.perf_counter()
    index_task.publish_shapefile(published=None)  # plan saw the zip behind: the new row is not in it
    timings["shapefile"] = time.perf_counter() - start
    return timings


def rebuild_whole(db, collection: Collection, settings: Settings, s3: Ls4S3Hook) -> float:
    """The previous design: list the COGs, open each over S3 for its bbox, replace the
    table through a staging schema and write the shapefile, all from scratch."""
    start = time.perf_counter()
    keys = [obj.key for obj in s3.list_objects(settings.bucket, collection.prefix("cog"))
            if collection.is_cog_key(obj.key)]

    def bbox(key):
        with rasterio.open(vsis3_path(settings.bucket, key)) as cog:
            return {"location": vsis3_path(settings.bucket, key), "src_srs": cog.crs.to_string(),
                    "geom": box(*cog.bounds)}
    with s3.endpoint().rasterio_env(), ThreadPoolExecutor(8) as pool:
        records = list(pool.map(bbox, keys))
    frame = gpd.GeoDataFrame(records, geometry="geom", crs=tileindex.INDEX_CRS)
    frame.index.name = "gid"
    scratch = f"{collection.table}_rebuild"
    with db.begin() as connection:
        connection.execute(text("CREATE SCHEMA IF NOT EXISTS bench_staging"))
    frame.to_postgis(scratch, db, schema="bench_staging", if_exists="replace", index=True)
    with db.begin() as connection:
        connection.execute(text(f'DROP TABLE IF EXISTS public."{scratch}"'))
        connection.execute(text(f'ALTER TABLE bench_staging."{scratch}" SET SCHEMA public'))
    with tempfile.TemporaryDirectory() as directory:
        shapefile = os.path.join(directory, f"{collection.name}.shp")
        frame.to_file(shapefile, driver="ESRI Shapefile", engine="pyogrio")
        parts = [shapefile[:-4] + ext for ext in tileindex.SHAPEFILE_PARTS if os.path.exists(shapefile[:-4] + ext)]
        with zipfile.ZipFile(shapefile[:-4] + "_idx.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for part in parts:
                archive.write(part, os.path.basename(part))
        for path in [*parts, shapefile[:-4] + "_idx.zip"]:
            s3.upload(path, settings.bucket, f"{collection.tile_index_prefix}rebuild/{os.path.basename(path)}")
    elapsed = time.perf_counter() - start
    with db.begin() as connection:
        connection.execute(text(f'DROP TABLE IF EXISTS public."{scratch}"'))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=7, help="uploads measured per collection size")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()
    local_stack.start(SERVICES)
    try:
        settings = Settings.from_env()
        db = local_stack.postgis_engine()
        s3 = Ls4S3Hook(aws_conn_id=settings.s3_conn_id)
        upload_cog, filler = made_cog("upload", FRAME_PX), made_cog("filler", FILLER_PX)
        print("| frames in the collection | upsert ms | plan ms | shapefile ms | **per upload ms** "
              "| previous design: rebuild ms | rebuild / per upload |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        per_upload = {}
        for size in args.sizes:
            collection = Collection("nc", f"bench{size}", "usda", "1999", "frames")
            fill(db, collection, size, filler, settings)
            index_task = TileIndexOperator(task_id="tile_index", collection=collection,
                                           bucket_name=settings.bucket, aws_conn_id=settings.s3_conn_id,
                                           postgis_conn_id=settings.postgis_conn_id)
            index_task.publish_shapefile(published=None)  # the collection as it was before the uploads
            rounds = [one_upload(db, collection, size + n, upload_cog, settings, index_task, s3)
                      for n in range(args.uploads)]
            medians = {part: statistics.median(r[part] for r in rounds) * 1000 for part in rounds[0]}
            total = statistics.median(sum(r.values()) for r in rounds) * 1000
            rebuild = min(rebuild_whole(db, collection, settings, s3) for _ in range(3)) * 1000
            per_upload[size] = total
            print(f"| {size} | {medians['upsert']:.0f} | {medians['plan']:.0f} | {medians['shapefile']:.0f} "
                  f"| **{total:.0f}** | {rebuild:.0f} | {rebuild / total:.1f} |", flush=True)
    finally:
        local_stack.stop(SERVICES)
    if len(per_upload) > 1:
        print(f"n{max(per_upload)}/n{min(per_upload)}={per_upload[max(per_upload)] / per_upload[min(per_upload)]:.2f}")
    print("index: per-upload-ms " + " ".join(f"n{size}={ms:.0f}" for size, ms in per_upload.items()))


if __name__ == "__main__":
    main()
