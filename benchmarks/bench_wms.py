"""What a GetMap costs as a collection grows: 10, 100 and 500 frames, on the real local services.

On a stack of its own (S3 emulator, PostGIS, MapServer 8 behind lighttpd,
the mapfile sync; state in ``.state/bench-wms``), for each collection size N:

* N overlapping frames laid out like an aerial survey (flight lines of
  frames with 60 % forward and 30 % side overlap), each a real ls4 COG
  (a synthetic 1024 px frame at 1 m in EPSG:26914 with a scan collar,
  through ``raster.compress``/``add_overviews``/``to_cog``), uploaded
  public by the bucket policy, its row upserted with ``tileindex.index_row``;
* the collection overview drawn with ``overview.update`` and uploaded
  public by the bucket policy, as ``CollectionOverviewOperator`` does;
* three mapfiles, published to ``mapfiles/`` and served once the sync has
  installed them:
  - ``ls4``: ls4's own (``mapfile.build(..., overview=...)``);
  - ``frames-only``: the same without the overview layer (the baseline: the
    design before the overview);
  - ``no-cache``: ls4's own with GDAL's /vsicurl/ cache disabled
    (``CPL_VSIL_CURL_NON_CACHED=/vsicurl/``), as ls4 served before COG
    locations carried their version;
* GetMap (WMS 1.3.0, EPSG:3857, PNG, transparent) at 256 and 1024 px: of
  the full extent, of one frame in the middle of the collection, and (for
  the mapfiles with an overview) of the widest view still drawn from the
  frames ("below switch": a screen pixel 5 % finer than an overview
  pixel), the most frames one GetMap opens. Warm-up requests (not timed,
  each image checked: a PNG, at least a quarter drawn), then
  ``--requests`` timed requests per case, sequential, cases interleaved
  round by round; then the S3 emulator's log counts the GETs and HEADs one
  GetMap costs.

Each variant is measured in a block of its own, on MapServer processes
restarted for it, not interleaved with the others: the variants would
share MapServer's processes and so GDAL's /vsicurl/ cache (16 MB), which
the baseline's full-extent requests at 500 frames flush; and MapServer 8.0
leaves a mapfile's CONFIG options set in its process after the request, so
one ``no-cache`` request (even a GetCapabilities) turns the cache off for
every mapfile that process serves afterwards. The blocks run one after the
other, so the figures of the last lines come from a final pass in which
the smallest and the largest collection's requests alternate.

``--explore`` adds variants that measure what would make ls4's frames
cheaper (each ls4's mapfile with one change; "vs ls4" compares its images
with ls4's):
  - ``defer``: ``PROCESSING "CLOSE_CONNECTION=DEFER"`` on the frames layer
    (MapServer otherwise closes each tile of a tile index after drawing it,
    and GDAL's /vsicurl/ cache does not keep the multi-range reads the GTiff
    driver makes for tiles);
  - ``direct``: no ``RESAMPLE=AVERAGE`` on the frames layer (same
    projection: MapServer reads through GDAL's RasterIO, which picks the
    COG's averaged overview level, instead of its own resampler);
  - ``visible``: the tile index query on each frame's visible part (its
    footprint less those of the frames drawn over it), so frames wholly
    hidden in the view are not opened;
  - ``overview-z16``: an overview on the zoom-16 grid (2.39 m a pixel)
    instead of zoom 14 (9.55 m), so frames are drawn only when zoomed in
    further.

Ends with ``one-frame p95 n500/n10=<x>`` and, last,
``wms: p95-full-extent-ms n10=<a> n500=<b> ratio=<b/a>`` (ls4's mapfile,
256 px, from the final pass). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "plugins"), ROOT]

from include import local_stack  # noqa: E402

BENCH_STACK = local_stack.bench_stack("bench-wms", 21200)
SERVICES = ["s3", "postgis", "mapserver", "mapsync"]
local_stack.use(BENCH_STACK)

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from sqlalchemy import text  # noqa: E402

from ls4_ops import mapfile, overview, tileindex  # noqa: E402
from ls4_ops.layout import Collection  # noqa: E402
from ls4_ops.s3env import S3Endpoint  # noqa: E402
from ls4_ops.settings import Settings  # noqa: E402

OUT = os.path.join(ROOT, "benchmarks", "out", "wms")
FRAMES_DIR = os.path.join(OUT, "frames")
SIZES = (10, 100, 500)
IMAGE_SIZES = (256, 1024)
# "below switch": the widest view ls4 still draws frames for (a screen pixel 5 % finer
# than an overview pixel), centred on the collection: the most frames one GetMap opens.
CASES = ("full extent", "one frame", "below switch")
VARIANTS = ("ls4", "frames-only", "no-cache")
# Measured with --explore: what would make ls4's frames cheaper (see the module's docstring).
EXPLORATORY = ("defer", "direct", "visible", "overview-z16")
MAPFILE_SUFFIX = {"ls4": "", "frames-only": "_frames_only", "no-cache": "_nocache", "defer": "_defer",
                  "direct": "_direct", "visible": "_visible", "overview-z16": "_z16"}
FINE_OVERVIEW_ZOOM = 16  # 2.39 m a pixel, for the overview-z16 variant
# Visible variant: parts of a frame narrower than twice this are taken as hidden (the
# slivers two simplified footprint outlines leave between them).
HIDDEN_MARGIN_M = 5.0

# The survey: 1024 px frames of 1 m in UTM 14N (ls4 reprojects them to EPSG:3857,
# 1.16 m there), near Austin, flight lines west-east, north to south.
FRAME_PX = 1024
PIXEL_M = 1.0
COLLAR_PX = FRAME_PX // 60
FORWARD_OVERLAP = 0.6
SIDE_OVERLAP = 0.3
SOURCE_CRS = "EPSG:26914"
ORIGIN = (600_000, 3_360_000)  # upper-left corner of the survey's first frame

MAPFILE_PREFIX = "mapfiles/"
SERVED_TIMEOUT_S = 60
# A case whose image is mostly transparent measures nothing (a COG MapServer
# could not read is skipped silently: ON_MISSING_DATA IGNORE).
MIN_DRAWN = 0.25
# A case whose warm-up request took longer than this is timed --slow-requests times only.
SLOW_S = 5.0


# --- the frames --------------------------------------------------------------------------------

def survey(count: int) -> list[tuple[int, int]]:
    """Upper-left corners (UTM metres) of ``count`` frames in flight lines.

    Frames follow each other every 40 % of a frame along a line (60 % forward
    overlap), lines are 70 % of a frame apart (30 % side overlap), and the
    number of frames per line makes the block about square.
    """
    side = FRAME_PX * PIXEL_M
    along, across = round(side * (1 - FORWARD_OVERLAP)), round(side * (1 - SIDE_OVERLAP))
    per_line = max(1, round(math.sqrt(count * across / along)))
    corners = []
    for i in range(count):
        line, k = divmod(i, per_line)
        column = k if line % 2 == 0 else per_line - 1 - k  # flown back and forth
        corners.append((ORIGIN[0] + column * along, ORIGIN[1] - line * across))
    return corners


def cog_path(corner: tuple[int, int]) -> str:
    return os.path.join(FRAMES_DIR, f"{FRAME_PX}px_c{COLLAR_PX}_e{corner[0]}_n{corner[1]}.tif")


def make_cog(corner: tuple[int, int]) -> str:
    """The ls4 COG of the synthetic frame at ``corner`` (kept under benchmarks/out/wms/)."""
    path = cog_path(corner)
    if os.path.exists(path):
        return path
    from include.synthetic import make_frame
    from ls4_ops import raster

    os.makedirs(FRAMES_DIR, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=FRAMES_DIR) as scratch:
        upload, compressed, cog = (os.path.join(scratch, name) for name in ("upload.tif", "c.tif", "cog.tif"))
        left, top = corner
        side = FRAME_PX * PIXEL_M
        make_frame(upload, "nc", FRAME_PX, FRAME_PX, crs=SOURCE_CRS, bounds=(left, top - side, left + side, top),
                   collar=COLLAR_PX)
        raster.compress(upload, compressed, "nc")
        raster.add_overviews(compressed)
        raster.to_cog(compressed, cog, "nc")
        os.replace(cog, path)  # complete or absent
    return path


def make_cogs(corners: list[tuple[int, int]]) -> None:
    missing = sorted({c for c in corners if not os.path.exists(cog_path(c))})
    if not missing:
        return
    print(f"generating {len(missing)} COGs into {FRAMES_DIR} (kept for later runs)", flush=True)
    start = time.perf_counter()
    # Two processes: the raster steps are partly single-threaded. Spawned, not
    # forked: the parent holds GDAL and thread pools.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done, _ in enumerate(pool.map(make_cog, missing, chunksize=8), 1):
            if done % 100 == 0:
                print(f"  {done}/{len(missing)}", flush=True)
    print(f"  {len(missing)} COGs in {time.perf_counter() - start:.0f} s", flush=True)


# --- a collection on the stack ------------------------------------------------------------------

@dataclass
class Served:
    collection: Collection
    count: int
    extent: list[float]  # what the mapfile says (the index's bounds, padded)
    middle: tuple[float, float, float, float]  # bbox of the frame nearest the centre
    overviews: dict[int, tuple[str, float]]  # zoom -> (key, metres per pixel)
    overview_seconds: dict[int, float]
    urls: dict[str, str]  # variant -> WMS URL

    def switch_resolution(self, variant: str) -> float | None:
        """Metres per pixel beyond which a variant draws the overview (None: it never does)."""
        if variant == "frames-only":
            return None
        return self.overviews[FINE_OVERVIEW_ZOOM if variant == "overview-z16" else overview.MAX_ZOOM][1]

    def tile_table(self, variant: str) -> str:
        return visible_table(self.collection) if variant == "visible" else self.collection.table


def visible_table(collection: Collection) -> str:
    return f"{collection.table}_visible"


def draw_overview(db, s3, settings: Settings, collection: Collection, summary, paths: dict[str, str],
                  zoom: int) -> tuple[str, float, float]:
    """The collection overview as CollectionOverviewOperator.draw makes it, on the grid of
    ``zoom`` at most, from the local COG files (the same bytes as the uploaded ones; over
    /vsis3/ it only takes longer), uploaded (public by the bucket policy); its key, resolution and seconds."""
    start = time.perf_counter()
    default_zoom = overview.MAX_ZOOM
    overview.MAX_ZOOM = zoom
    try:
        with tempfile.TemporaryDirectory(prefix="ls4-bench-overview-") as directory, ExitStack() as stack:
            opened = {}

            def frames_in(bounds):
                with db.connect() as connection:
                    keys = tileindex.cogs_within(connection, collection, bounds)
                for key in keys:
                    if key not in opened:
                        opened[key] = stack.enter_context(rasterio.open(paths[key]))
                    yield opened[key]

            out = os.path.join(directory, "overview.tif")
            info = overview.update(None, out, collection.band, summary.bounds, [], frames_in,
                                   scratch=os.path.join(directory, "work.tif"))
            key = collection.overview_key(summary.generation, info["zoom"])
            s3.upload_file(out, settings.bucket, key, ExtraArgs={"ContentType": "image/tiff"})
    finally:
        overview.MAX_ZOOM = default_zoom
    return key, info["resolution"], time.perf_counter() - start


def make_visible_table(db, collection: Collection) -> None:
    """Each frame's visible part: its footprint less those of the frames drawn over it, without
    slivers narrower than 2 x HIDDEN_MARGIN_M; frames wholly hidden have no row."""
    table, visible = collection.table, visible_table(collection)
    with db.begin() as connection:
        connection.execute(text(f'DROP TABLE IF EXISTS public."{visible}"'))
        connection.execute(text(
            f'CREATE TABLE public."{visible}" AS SELECT a.gid, a.cog_key, a.location, a.src_srs, '
            f"ST_Multi(ST_CollectionExtract(ST_Buffer(ST_Buffer(ST_Difference(a.geom, COALESCE("
            f"(SELECT ST_Union(b.geom) FROM public.\"{table}\" b "
            f"WHERE b.cog_key > a.cog_key AND b.geom && a.geom), "
            f"ST_GeomFromText('POLYGON EMPTY', {tileindex.INDEX_SRID}))), -{HIDDEN_MARGIN_M}), "
            f"{HIDDEN_MARGIN_M}), 3)) AS visible "
            f'FROM public."{table}" a'))
        connection.execute(text(f'DELETE FROM public."{visible}" WHERE ST_IsEmpty(visible) OR ST_Area(visible) < 1'))
        connection.execute(text(f'CREATE INDEX ON public."{visible}" USING gist (visible)'))
        connection.execute(text(f'ANALYZE public."{visible}"'))


def variant_mapfile(variant: str, served: Served, common: dict, settings: Settings) -> dict:
    """The mapfile dict a variant serves."""
    collection, extent = served.collection, served.extent
    if variant == "frames-only":
        return mapfile.build(collection, extent, **common, overview=None)
    zoom = FINE_OVERVIEW_ZOOM if variant == "overview-z16" else overview.MAX_ZOOM
    key, resolution = served.overviews[zoom]
    built = mapfile.build(collection, extent, **common,
                          overview=mapfile.Overview(f"/vsicurl/{settings.public_link(key)}", resolution))
    frames_layer = next(layer for layer in built["layers"]
                        if layer["name"] == mapfile.raster_layer_names(collection)[0])
    if variant == "no-cache":
        built["config"]["CPL_VSIL_CURL_NON_CACHED"] = "/vsicurl/"
    elif variant == "defer":
        frames_layer["processing"] = [*frames_layer["processing"], "CLOSE_CONNECTION=DEFER"]
    elif variant == "direct":
        # Same projection and no RESAMPLE: MapServer reads through GDAL's RasterIO
        # (GDAL picks the COG's overview level) instead of its own resampler.
        frames_layer["processing"] = [p for p in frames_layer["processing"] if not p.startswith("RESAMPLE=")]
    elif variant == "visible":
        name = f"{collection.name}_visible_parts"
        built["layers"].insert(0, {
            "__type__": "layer", "name": name, "type": "POLYGON", "status": "OFF",
            "connectiontype": "POSTGIS", "connection": f"service={settings.pg_service}",
            # MapServer's own filter is a bounding-box overlap: the L-shaped visible part of
            # a frame has the frame's bounding box. !BOX! is the request's box.
            "data": f"visible from (select gid, location, src_srs, visible from {visible_table(collection)} "
                    f"where ST_Intersects(visible, !BOX!) order by {tileindex.DRAW_ORDER}) as v "
                    f"using unique gid using srid={tileindex.INDEX_SRID}",
            "projection": [f"init={tileindex.INDEX_CRS.lower()}"],
        })
        frames_layer["tileindex"] = name
    return built


def publish_collection(db, s3, settings: Settings, count: int, variants: list[str]) -> Served:
    collection = Collection("nc", f"benchwms{count}", "usda", "1999", "frames")
    corners = survey(count)
    stems = [f"f{i:04d}" for i in range(count)]
    with db.begin() as connection:
        connection.execute(text(f'DROP TABLE IF EXISTS public."{collection.table}"'))
        connection.execute(text(f'DROP TABLE IF EXISTS public."{visible_table(collection)}"'))
        if connection.execute(text("SELECT to_regclass(:c)"), {"c": tileindex.CATALOG}).scalar():
            for table in (tileindex.CATALOG, tileindex.CHANGES):
                connection.execute(text(f"DELETE FROM {table} WHERE table_name = :t"), {"t": collection.table})

    def upload(i: int) -> str:
        with open(cog_path(corners[i]), "rb") as body:
            answer = s3.put_object(Bucket=settings.bucket, Key=collection.cog_key(stems[i]), Body=body,
                                   ContentType="image/tiff")
        return answer["ETag"]

    with ThreadPoolExecutor(8) as pool:
        etags = list(pool.map(upload, range(count)))
    rows, paths = [], {}
    for i in range(count):
        cog_key = collection.cog_key(stems[i])
        paths[cog_key] = cog_path(corners[i])
        item = {"key": f"{collection.prefix('georef')}{stems[i]}.tif", "etag": f"bench{i}",
                "cog_key": cog_key, "scan": "", "cog_etag": etags[i]}
        with rasterio.open(paths[cog_key]) as cog:
            rows.append(tileindex.index_row(cog, collection, item, settings))
    with db.begin() as connection:
        tileindex.upsert(connection, collection, rows)
    with db.connect() as connection:
        summary = tileindex.summary(connection, collection)
        cx, cy = (summary.bounds[0] + summary.bounds[2]) / 2, (summary.bounds[1] + summary.bounds[3]) / 2
        middle = tuple(connection.execute(text(
            f"SELECT ST_XMin(bbox), ST_YMin(bbox), ST_XMax(bbox), ST_YMax(bbox) "
            f'FROM public."{collection.table}" '
            f"ORDER BY ST_Distance(ST_Centroid(bbox), ST_SetSRID(ST_MakePoint(:x, :y), {tileindex.INDEX_SRID})), "
            f"cog_key LIMIT 1"), {"x": cx, "y": cy}).one())

    zooms = [overview.MAX_ZOOM] + ([FINE_OVERVIEW_ZOOM] if "overview-z16" in variants else [])
    overviews, seconds = {}, {}
    for zoom in zooms:
        key, resolution, seconds[zoom] = draw_overview(db, s3, settings, collection, summary, paths, zoom)
        overviews[zoom] = (key, resolution)
    if "visible" in variants:
        make_visible_table(db, collection)
    served = Served(collection, count, tileindex.extent(summary.bounds), middle, overviews, seconds, {})
    common = dict(wms_url=settings.wms_url, pg_service=settings.pg_service, generation=summary.generation)
    for variant in variants:
        name = collection.name + MAPFILE_SUFFIX[variant]
        body = mapfile.render(variant_mapfile(variant, served, common, settings))
        s3.put_object(Bucket=settings.bucket, Key=f"{MAPFILE_PREFIX}{name}.map", Body=body.encode(),
                      ContentType="text/plain",
                      Metadata=mapfile.s3fs_metadata(settings.mapfile_uid, settings.mapfile_gid))
        served.urls[variant] = f"{settings.wms_url}?map=/{MAPFILE_PREFIX}{name}.map"
        wait_until_served(name, body, served.urls[variant])
    return served


def wait_until_served(name: str, body: str, url: str) -> None:
    """Until the sync has installed this very text and MapServer answers GetCapabilities from it."""
    path = os.path.join(os.environ["LS4_MAPFILE_DIR"], f"{name}.map")
    deadline = time.monotonic() + SERVED_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        try:
            with open(path) as handle:
                installed = handle.read() == body
        except FileNotFoundError:
            installed = False
        if installed:
            _, answer = wms_get(url, REQUEST="GetCapabilities")
            if b"WMS_Capabilities" in answer:
                return
            last = answer[:300].decode(errors="replace")
        time.sleep(0.5)
    raise RuntimeError(f"MapServer does not serve {name}.map after {SERVED_TIMEOUT_S} s "
                       f"(see {os.environ['LS4_STATE_DIR']}/log/mapsync.log): {last}")


# --- requests -----------------------------------------------------------------------------------

def wms_get(url: str, **params) -> tuple[str, bytes]:
    query = urllib.parse.urlencode({"SERVICE": "WMS", "VERSION": "1.3.0", **params})
    try:
        with urllib.request.urlopen(f"{url}&{query}", timeout=300) as response:
            return response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.headers.get("Content-Type", ""), error.read()


def square(bounds) -> tuple[float, float, float, float]:
    """``bounds`` grown to a square about its centre: a WIDTH = HEIGHT GetMap then has square
    pixels, so its scale (and the overview switch) is the same across and down."""
    minx, miny, maxx, maxy = bounds
    half = max(maxx - minx, maxy - miny) / 2
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def centred(bounds, side: float) -> tuple[float, float, float, float]:
    cx, cy = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


@dataclass(frozen=True)
class Case:
    frames: int
    variant: str
    size: int
    case: str
    url: str
    layer: str
    bbox: tuple[float, float, float, float]

    def get(self) -> tuple[float, bytes]:
        start = time.perf_counter()
        content_type, body = wms_get(self.url, REQUEST="GetMap", LAYERS=self.layer, STYLES="", CRS="EPSG:3857",
                                     BBOX=",".join(f"{v:.3f}" for v in self.bbox), WIDTH=self.size,
                                     HEIGHT=self.size, FORMAT="image/png", TRANSPARENT="TRUE")
        elapsed = time.perf_counter() - start
        if not content_type.startswith("image/png"):
            raise RuntimeError(f"{self}: MapServer answered {content_type!r}: {body[:500].decode(errors='replace')}")
        return elapsed, body


def cases_of(served: Served, variant: str) -> list[Case]:
    full = square(served.extent)
    boxes = {"full extent": full, "one frame": square(served.middle)}
    switch = served.switch_resolution(variant)
    cases = []
    for size in IMAGE_SIZES:
        sized = dict(boxes)
        below = size * switch * 0.95 if switch is not None and variant != "no-cache" else None
        if below and below < full[2] - full[0]:  # else the full extent is drawn from the frames already
            sized["below switch"] = centred(served.extent, below)
        cases += [Case(served.count, variant, size, name, served.urls[variant], served.collection.name, box)
                  for name, box in sized.items()]
    return cases


def pixels(png: bytes) -> np.ndarray:
    with rasterio.MemoryFile(png) as memory, memory.open() as image:
        return image.read()


def compared(image: np.ndarray, reference: np.ndarray | None) -> tuple[float, float] | None:
    """Share of pixels drawn in one image and not the other, and mean |difference| of the
    colour bands where both are drawn."""
    if reference is None:
        return None
    drawn, drawn_there = image[-1] > 0, reference[-1] > 0
    both = drawn & drawn_there
    difference = np.abs(image[:3, both].astype(float) - reference[:3, both]).mean() if both.any() else 0.0
    return float((drawn != drawn_there).mean()), float(difference)


class S3Log:
    """Counts the S3 emulator's requests for one collection's objects (its log lists each)."""

    def __init__(self, collection: Collection):
        self.path = os.path.join(os.environ["LS4_STATE_DIR"], "log", "s3.log")
        # werkzeug colours some status lines: the method may follow escape sequences.
        self.pattern = re.compile(rf'"(?:\x1b\[[0-9;]*m)*(GET|HEAD) /[^/ ]+/{re.escape(collection.root)}')
        self.offset = os.path.getsize(self.path)

    def new_requests(self) -> dict[str, int]:
        """GETs and HEADs since the last call."""
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            lines = handle.read().decode(errors="replace")
            self.offset = handle.tell()
        methods = self.pattern.findall(lines)
        return {"GET": methods.count("GET"), "HEAD": methods.count("HEAD")}


def restart_mapserver() -> None:
    """Fresh MapServer processes: an empty GDAL cache, and no CONFIG option left behind by
    another mapfile (MapServer 8.0 does not unset a mapfile's CONFIG options after its
    request: the no-cache mapfile's CPL_VSIL_CURL_NON_CACHED would stay in force)."""
    subprocess.run([local_stack.STACK, "restart", "mapserver"], check=True, capture_output=True)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.array(seconds) * 1000, [50, 95])
    return float(p50), float(p95)


def measure(served: Served, db, variant: str, args, references: dict) -> list[dict]:
    """One variant's block on fresh MapServer processes: warm-up, then timed rounds over its
    cases (interleaved), then S3 request counts."""
    restart_mapserver()
    collection = served.collection
    cases = cases_of(served, variant)
    rounds, quality = {}, {}
    for case in cases:
        for _ in range(args.warmup):
            elapsed, png = case.get()
        image = pixels(png)
        drawn = float((image[-1] > 0).mean())
        if drawn < MIN_DRAWN:
            raise RuntimeError(f"{case}: only {drawn:.0%} of the image is drawn (check the WMS log, "
                               f"{os.environ['LS4_STATE_DIR']}/log/mapserver.log)")
        key = (served.count, case.size, case.case, case.bbox)
        if variant == "ls4":
            references[key] = image
        quality[case] = compared(image, references.get(key)) if variant != "ls4" else None
        rounds[case] = args.requests if elapsed < SLOW_S else min(args.requests, args.slow_requests)
    times = {case: [] for case in cases}
    for r in range(max(rounds.values())):
        for case in cases:
            if r < rounds[case]:
                times[case].append(case.get()[0])
    log = S3Log(collection)
    s3_requests = {}
    for case in cases:
        log.new_requests()
        for _ in range(args.probes):
            case.get()
        time.sleep(0.2)
        s3_requests[case] = {method: n / args.probes for method, n in log.new_requests().items()}
    results = []
    switch = served.switch_resolution(variant)
    for case in cases:
        scale = (case.bbox[2] - case.bbox[0]) / case.size  # metres per pixel
        p50, p95 = percentiles(times[case])
        draws = ("overview" if switch is not None and scale > switch
                 else f"{tiles_within(db, served.tile_table(variant), case.bbox)} frames")
        results.append({"frames": served.count, "variant": variant, "size": case.size, "case": case.case,
                        "m_per_px": scale, "draws": draws, "n": len(times[case]), "p50": p50, "p95": p95,
                        "gets": s3_requests[case]["GET"], "heads": s3_requests[case]["HEAD"],
                        "vs_ls4": quality[case]})
    return results


def tiles_within(db, table: str, bbox) -> int:
    """How many rows MapServer's tile index query returns for ``bbox``: a bounding-box overlap
    with the footprints, or an intersection with the visible parts."""
    test = "ST_Intersects(visible, {})" if table.endswith("_visible") else f"{tileindex.GEOMETRY} && {{}}"
    with db.connect() as connection:
        return connection.execute(text(
            f'SELECT count(*) FROM public."{table}" WHERE '
            + test.format(f"ST_MakeEnvelope(:minx, :miny, :maxx, :maxy, {tileindex.INDEX_SRID})")),
            dict(zip(("minx", "miny", "maxx", "maxy"), bbox))).scalar()


def ratio_pass(served: dict[int, Served], args) -> dict:
    """ls4's mapfile at 256 px, full extent and one frame, the smallest and the largest
    collection's requests alternating on the same fresh MapServer processes: a ratio
    that machine load drifting between the blocks cannot bend."""
    restart_mapserver()
    cases = [case for n in (min(served), max(served)) for case in cases_of(served[n], "ls4")
             if case.size == 256 and case.case in ("full extent", "one frame")]
    for case in cases:
        for _ in range(args.warmup):
            case.get()
    times = {case: [] for case in cases}
    for _ in range(args.requests):
        for case in cases:
            times[case].append(case.get()[0])
    return {(case.frames, case.case): percentiles(times[case]) for case in cases}


# --- the run -----------------------------------------------------------------------------------

def pick(results, frames, variant, size, case):
    return next((r for r in results if (r["frames"], r["variant"], r["size"], r["case"]) ==
                 (frames, variant, size, case)), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="frames per collection")
    parser.add_argument("--requests", type=int, default=20, help="timed GetMap requests per case")
    parser.add_argument("--slow-requests", type=int, default=7,
                        help=f"timed requests of a case whose warm-up took over {SLOW_S:.0f} s")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed requests per case first (lighttpd runs 2 MapServer processes)")
    parser.add_argument("--probes", type=int, default=1, help="requests per case counted in the S3 log")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS + EXPLORATORY,
                        help=f"default: {' '.join(VARIANTS)}")
    parser.add_argument("--explore", action="store_true", help=f"add {', '.join(EXPLORATORY)}")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args()
    sizes = sorted(set(args.sizes))
    chosen = set(args.variants or VARIANTS) | (set(EXPLORATORY) if args.explore else set())
    variants = [v for v in VARIANTS + EXPLORATORY if v in chosen]

    make_cogs([corner for size in sizes for corner in survey(size)])
    started = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    local_stack.start(SERVICES)
    results, served, references, ratios = [], {}, {}, None
    try:
        settings = Settings.from_env()
        db = local_stack.postgis_engine()
        s3 = S3Endpoint.from_env().boto3_client()
        for size in sizes:
            start = time.perf_counter()
            served[size] = publish_collection(db, s3, settings, size, variants)
            print(f"{served[size].collection.name}: {size} frames published and served in "
                  f"{time.perf_counter() - start:.0f} s (overviews: " + ", ".join(
                      f"z{zoom} {served[size].overviews[zoom][1]:.2f} m/px drawn in {seconds:.1f} s"
                      for zoom, seconds in served[size].overview_seconds.items()) + ")", flush=True)
            for variant in variants:
                start = time.perf_counter()
                results += measure(served[size], db, variant, args, references)
                print(f"  {variant} measured in {time.perf_counter() - start:.0f} s "
                      f"(load average {os.getloadavg()[0]:.2f})", flush=True)
        if "ls4" in variants and len(sizes) > 1:
            ratios = ratio_pass(served, args)
    finally:
        if args.keep_stack:
            print(f"stack left running (state in {BENCH_STACK['LS4_STATE_DIR']}); stop it with: "
                  + " ".join(f"{k}={v}" for k, v in BENCH_STACK.items()) + " include/stack/stack.sh stop")
        else:
            local_stack.stop(SERVICES)
    print(f"load average {os.getloadavg()[0]:.2f} at the end; {time.perf_counter() - started:.0f} s on the stack")
    report(results, ratios, sizes, variants, args)


def report(results: list[dict], ratios: dict | None, sizes: list[int], variants: list[str], args) -> None:
    print()
    print(f"GetMap, WMS 1.3.0, EPSG:3857, PNG; n sequential timed requests per case after {args.warmup} "
          f"untimed; S3 requests per GetMap counted over {args.probes} more; vs ls4: pixels drawn in one "
          "image only, mean |difference| of the colours drawn in both.")
    print()
    print("| frames | variant | size px | case | m/px | draws | n | p50 ms | p95 ms | S3 GET / GetMap "
          "| S3 HEAD / GetMap | vs ls4 |")
    print("|---:|---|---:|---|---:|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        versus = "" if r["vs_ls4"] is None else f"{r['vs_ls4'][0]:.1%}, {r['vs_ls4'][1]:.1f}"
        print(f"| {r['frames']} | {r['variant']} | {r['size']} | {r['case']} | {r['m_per_px']:.1f} | {r['draws']} "
              f"| {r['n']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['gets']:.1f} | {r['heads']:.1f} | {versus} |")
    print()
    lo, hi = min(sizes), max(sizes)

    def ratio(a, b):
        return f"{a['p95'] / b['p95']:.2f}" if a and b else "-"

    if lo != hi:
        for case in ("full extent", "one frame"):
            for variant in variants:
                print(f"p95 n{hi}/n{lo}, {case}, {variant}: " + ", ".join(
                    f"{size} px {ratio(pick(results, hi, variant, size, case), pick(results, lo, variant, size, case))}"
                    for size in IMAGE_SIZES))
    if "ls4" in variants:
        for variant in variants[1:]:
            for case in CASES:
                line = ", ".join(f"n{n} {size} px {ratio(pick(results, n, variant, size, case), pick(results, n, 'ls4', size, case))}"
                                 for n in sizes for size in IMAGE_SIZES
                                 if pick(results, n, variant, size, case))
                if line:
                    print(f"p95 {variant}/ls4, {case}: {line}")
    if ratios:
        print()
        print(f"ratio pass (ls4, 256 px, n{lo} and n{hi} alternating, {args.requests} requests each): " + "; ".join(
            f"n{n} {case} p50 {p50:.0f} ms p95 {p95:.0f} ms" for (n, case), (p50, p95) in ratios.items()))
        full = {n: ratios[(n, "full extent")][1] for n in (lo, hi)}
        one = {n: ratios[(n, "one frame")][1] for n in (lo, hi)}
        print(f"one-frame p95 n{hi}/n{lo}={one[hi] / one[lo]:.2f}")
        print(f"wms: p95-full-extent-ms n{lo}={full[lo]:.0f} n{hi}={full[hi]:.0f} ratio={full[hi] / full[lo]:.2f}")


if __name__ == "__main__":
    main()
