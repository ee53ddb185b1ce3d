"""What orchestration costs: a 200-frame collection end to end on the local stack,
against a bare loop of GDAL's COG driver over the same frames on the same machine.

On a stack of its own (S3 emulator with its SQS queues and the bucket's
notification, PostGIS, MapServer, the mapfile sync and ``airflow standalone``;
state in ``.state/bench-load``, wiped at the start):

1. ``--frames`` (200) collared RGB frames of ``--size`` px (2000) side by side
   in UTM 14N, JPEG-compressed GeoTIFFs, are made once and kept in
   ``benchmarks/out/inputs/load-<size>`` (one frame drawn, the others are
   copies of it with their own place);
2. the bare loop: rasterio's GDAL (the GDAL ls4 runs) writes each frame as a
   COG with its one-pass COG driver (JPEG q85, 512 px blocks, averaged
   overviews), local file to local file, with one process per core, so both
   sides get the same cores;
3. ls4: the collection is made known with one frame (its DAG appears and is
   idle), then every frame is uploaded at once, as a scanning crew would.
   Timed from the first upload until every frame is in the collection's tile
   index and no run of it is left;
4. ``lost``: frames that are not in the index exactly once, or have no COG.

``ratio`` = ls4's frames per minute / the bare loop's: what the S3 round
trips between the three raster stages, the index, the mapfile and Airflow's
scheduling cost on top of the raster work. Ends with
``load: frames=<n> ratio=<r> frames_per_min=<f> lost=<n>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "plugins"), ROOT]

from include import local_stack  # noqa: E402

BENCH_STACK = local_stack.bench_stack("bench-load", 21300)
SERVICES = ["s3", "postgis", "mapserver", "mapsync", "airflow"]
local_stack.use(BENCH_STACK)

import rasterio  # noqa: E402
from rasterio.shutil import copy as gdal_copy  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from include.synthetic import make_frame  # noqa: E402
from ls4_ops import tileindex  # noqa: E402
from ls4_ops.layout import Collection, parse_key  # noqa: E402
from ls4_ops.s3env import S3Endpoint  # noqa: E402
from ls4_ops.settings import Settings  # noqa: E402

UTM = "EPSG:26914"
ORIGIN = (600_000.0, 3_400_000.0)  # top left of the grid of frames, 1 m pixels
COLUMNS = 20
COLLECTION = Collection("nc", "loadcounty", "usda", "1966", "frames")
COG_DRIVER_OPTIONS = {"COMPRESS": "JPEG", "QUALITY": "85", "BLOCKSIZE": "512", "OVERVIEW_RESAMPLING": "AVERAGE"}
TIMEOUT_S = 4 * 3600


def frame_key(i: int) -> str:
    return f"{COLLECTION.prefix('georef')}19660101_1-{i}.tif"


def make_inputs(folder: str, frames: int, size: int) -> list[str]:
    """``frames`` + 1 files (the last makes the collection known): one drawn, the others copied."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"frame{i}.tif") for i in range(frames + 1)]
    if all(os.path.exists(path) for path in paths):
        return paths
    drawn, template = os.path.join(folder, "drawn.tif"), os.path.join(folder, "template.tif")
    make_frame(drawn, "nc", size, size, crs=UTM, bounds=(0, 0, size, size), collar=size // 100)
    # As many scans are delivered: JPEG in a tiled GeoTIFF (a tenth of the raw size, which
    # keeps the S3 emulator, holding every object in memory, out of the figures).
    gdal_copy(drawn, template, driver="GTiff", TILED="YES", COMPRESS="JPEG", JPEG_QUALITY="90",
              PHOTOMETRIC="YCBCR")
    os.remove(drawn)
    for i, path in enumerate(paths):
        row, column = divmod(i, COLUMNS)
        shutil.copyfile(template, path + ".tmp")
        with rasterio.open(path + ".tmp", "r+") as frame:
            frame.transform = from_origin(ORIGIN[0] + column * size, ORIGIN[1] - row * size, 1.0, 1.0)
        os.replace(path + ".tmp", path)
    os.remove(template)
    return paths


def cog_driver(paths: tuple[str, str]) -> None:
    with rasterio.Env(GDAL_CACHEMAX=256):
        gdal_copy(paths[0], paths[1], driver="COG", **COG_DRIVER_OPTIONS)


def bare_loop(paths: list[str], folder: str) -> float:
    """Seconds for the COG driver to write every frame, one process per core."""
    os.makedirs(folder, exist_ok=True)
    jobs = [(path, os.path.join(folder, os.path.basename(path))) for path in paths]
    started = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(cog_driver, jobs))
    seconds = time.perf_counter() - started
    shutil.rmtree(folder)
    return seconds


def index_counts(engine) -> tuple[int, int]:
    """(rows, distinct COG keys) of the collection's tile index."""
    with engine.connect() as connection:
        if COLLECTION.table not in set(connection.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()):
            return 0, 0
        return tuple(connection.execute(text(
            f"SELECT count(*), count(DISTINCT {tileindex.COG_KEY_COLUMN}) FROM public.\"{COLLECTION.table}\"")).one())


def unfinished_runs() -> int:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(DagRun).where(
            DagRun.dag_id == COLLECTION.dag_id, DagRun.state.in_(("queued", "running"))))


def runs_and_tasks() -> tuple[int, int]:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return (session.scalar(select(func.count()).select_from(DagRun).where(DagRun.dag_id == COLLECTION.dag_id)),
                session.scalar(select(func.count()).select_from(TaskInstance).where(
                    TaskInstance.dag_id == COLLECTION.dag_id)))


def wait_until(what: str, check, timeout: float = TIMEOUT_S, interval: float = 2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {timeout:.0f} s")
        time.sleep(interval)


def cog_keys(s3, bucket: str) -> set[str]:
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=COLLECTION.prefix("cog")):
        keys.update(o["Key"] for o in page.get("Contents", []) if COLLECTION.is_cog_key(o["Key"]))
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=2000, help="frame width and height in px")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args()

    inputs = make_inputs(os.path.join(ROOT, "benchmarks", "out", "inputs", f"load-{args.size}"),
                         args.frames, args.size)
    first, frames = inputs[-1], inputs[:-1]
    print(f"{args.frames} frames of {args.size} x {args.size} px RGB, "
          f"{sum(os.path.getsize(p) for p in frames) / 2**20:,.0f} MB; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    bare_s = bare_loop(frames, os.path.join(ROOT, "benchmarks", "out", "work", "load-cogdriver"))
    bare_fpm = args.frames / bare_s * 60
    print(f"bare loop of the COG driver: {bare_s:.1f} s, {bare_fpm:.1f} frames/min", flush=True)

    state = os.environ["LS4_STATE_DIR"]
    subprocess.run([local_stack.STACK, "stop"], check=False, capture_output=True)
    shutil.rmtree(state, ignore_errors=True)  # a fresh bucket, index and Airflow database
    local_stack.start(SERVICES)
    try:
        settings = Settings.from_env()
        s3 = S3Endpoint.from_env().boto3_client()
        engine = local_stack.postgis_engine()
        # The collection is known and idle before the burst: its DAG exists.
        s3.upload_file(first, settings.bucket, frame_key(args.frames))
        wait_until("the first frame indexed", lambda: index_counts(engine)[0] == 1, timeout=900)
        wait_until("the collection idle", lambda: unfinished_runs() == 0, timeout=900)
        runs_before, tasks_before = runs_and_tasks()

        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: s3.upload_file(frames[i], settings.bucket, frame_key(i)), range(args.frames)))
        uploaded_s = time.perf_counter() - started
        print(f"{args.frames} frames uploaded in {uploaded_s:.1f} s", flush=True)
        wait_until("every frame indexed", lambda: index_counts(engine)[1] >= args.frames + 1)
        wait_until("no run left", lambda: unfinished_runs() == 0)
        ls4_s = time.perf_counter() - started

        rows, distinct = index_counts(engine)
        expected = {parse_key(frame_key(i)).cog_key for i in range(args.frames + 1)}
        with engine.connect() as connection:
            indexed = set(tileindex.indexed(connection, COLLECTION))
        lost = len(expected - indexed) + len(expected - cog_keys(s3, settings.bucket)) + (rows - distinct)
        runs, tasks = runs_and_tasks()
        print(f"ls4: {ls4_s:.1f} s from the first upload to the last frame indexed, "
              f"{runs - runs_before} runs, {tasks - tasks_before} task instances", flush=True)
    finally:
        if args.keep_stack:
            print(f"stack left running (state in {state})")
        else:
            local_stack.stop(SERVICES)
    fpm = args.frames / ls4_s * 60
    print(f"load: frames={args.frames} ratio={fpm / bare_fpm:.2f} frames_per_min={fpm:.1f} lost={lost}")


if __name__ == "__main__":
    main()
