"""Raster benchmark: ls4's per-frame stages against the original chain and GDAL's COG driver.

Contenders, each run on the same input files in this run, each in its own
child process (wall time, CPU time and peak RSS belong to that child alone):

- ``original``: the three GDAL commands of the lambda-s4 Lambda functions, run
  with the Debian GDAL CLI (3.6): ``gdal_translate`` DEFLATE (ls4-01-compress),
  ``gdaladdo -r average -ro 2 4 8 16 32 64`` (ls4-02-overviews),
  ``gdal_translate`` COPY_SRC_OVERVIEWS, JPEG q85 YCbCr for nc (ls4-03-cog);
- ``cogdriver``: GDAL's COG driver in one pass (``gdal_translate -of COG``,
  GDAL 3.6 CLI);
- ``cogdriver-3.10`` and ``original-3.10``: the same through rasterio's GDAL
  3.10 (the one ls4 uses), to tell GDAL-version effects from design effects;
- ``ls4``: ``compress -> add_overviews -> to_cog`` of ``ls4_ops.raster`` on
  local files (no S3 transfer). Its wall and CPU time are the sum of the three
  stages; the Python start-up and imports are reported apart.

Inputs: synthetic frames in EPSG:3857 (no reprojection, so every contender
does the same work) with a black scan collar; one EPSG:26914 frame (ls4
reprojects it; GDAL's one-pass equivalent is ``gdalwarp -of COG``); a
20000 x 20000 RGB frame for peak RSS; a handful of real 8-bit files from
../shared/data/geotiff. Quality: PSNR of each COG's full-resolution pixels
against the source, where both are valid.

Ends with ``raster: ls4/original=<r> ls4/cogdriver=<r> cpu_ls4/cogdriver=<r>
peak_rss_mb=<n>``: wall-time ratios and ls4's CPU time over the COG driver's
on the 6000 x 6000 RGB frame, peak RSS of ls4 on the 20000 x 20000 one. See
benchmarks/README.md.

The parent process uses the standard library only and stays small: on Linux
a child's ru_maxrss starts at its parent's peak RSS when it execs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "out")
REAL_DIR = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "geotiff"))
MIB = 2**20

# --- the contenders' commands ---------------------------------------------------
# lambda-s4 (TNRIS/lambda-s4): ls4-01-compress ran `gdal_translate $ncBands|$bwBands
# $gdalArgs`, ls4-02-overviews `gdaladdo $gdaladdoArgs input.tif $gdaladdoLayers`,
# ls4-03-cog `gdal_translate $ncGdalArgs|$bwGdalArgs`, with the values of
# data/test/create_lambda.txt and exploration_instructional.md (step 18, bw).
ORIGINAL_BANDS = {"nc": "-b 1 -b 2 -b 3", "bw": "-b 1"}
ORIGINAL_COMPRESS_ARGS = ("-co tiled=yes -co BLOCKXSIZE=512 -co BLOCKYSIZE=512 "
                          "-co NUM_THREADS=ALL_CPUS -co COMPRESS=DEFLATE -co PREDICTOR=2")
ORIGINAL_GDALADDO_ARGS = "-r average -ro"
ORIGINAL_GDALADDO_LAYERS = "2 4 8 16 32 64"
ORIGINAL_COG_ARGS = {
    "nc": ("-of GTiff -co TILED=YES -co BLOCKXSIZE=512 -co BLOCKYSIZE=512 -co COMPRESS=JPEG "
           "-co JPEG_QUALITY=85 -co PHOTOMETRIC=YCBCR -co COPY_SRC_OVERVIEWS=YES "
           "--config GDAL_TIFF_OVR_BLOCKSIZE 512"),
    "bw": ("-of GTiff -ot Byte -a_nodata 256 -co TILED=YES -co BLOCKXSIZE=512 -co BLOCKYSIZE=512 "
           "-co COMPRESS=DEFLATE -co COPY_SRC_OVERVIEWS=YES --config GDAL_TIFF_OVR_BLOCKSIZE 512"),
}
# The Lambdas ran gdal_translate with these (gdaladdo without).
ORIGINAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "YES", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif"}

# GDAL's COG driver in one pass, with ls4's output settings (bw: DEFLATE + predictor, as ls4).
COG_DRIVER_OPTIONS = {
    "nc": {"COMPRESS": "JPEG", "QUALITY": "85", "BLOCKSIZE": "512", "OVERVIEW_RESAMPLING": "AVERAGE"},
    "bw": {"COMPRESS": "DEFLATE", "PREDICTOR": "YES", "BLOCKSIZE": "512",
           "OVERVIEW_RESAMPLING": "AVERAGE"},
}

# --- inputs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Synthetic:
    key: str
    label: str
    band: str
    width: int
    height: int
    crs: str = "EPSG:3857"
    collar: int = 0

    @property
    def path(self) -> str:
        crs = self.crs.replace(":", "").lower()
        return os.path.join(OUT, "inputs", f"{self.band}_{self.width}x{self.height}_{crs}_c{self.collar}.tif")


def synthetic_inputs(quick: bool) -> dict[str, Synthetic]:
    nc, bw, large = (1536, 2048, 4096) if quick else (6000, 8000, 20000)
    return {
        "nc": Synthetic("nc", f"RGB {nc}x{nc}", "nc", nc, nc, collar=nc // 100),
        "bw": Synthetic("bw", f"gray {bw}x{bw}", "bw", bw, bw, collar=bw // 100),
        "reproj": Synthetic("reproj", f"RGB {nc}x{nc} EPSG:26914 (reprojected)", "nc", nc, nc,
                            crs="EPSG:26914", collar=nc // 100),
        "large": Synthetic("large", f"RGB {large}x{large}", "nc", large, large, collar=large // 100),
    }


# Valid 8-bit real files (SOURCES.md): path under REAL_DIR, band prefix.
REAL_FILES = [
    ("cog/cogeo.tif", "nc"),  # aerial, EPSG:3857, internal mask
    ("aerial_rgb/image_2000px.tif", "nc"),  # aerial, EPSG:4326, JPEG
    ("aerial_rgb/south_africa_2010/3420B_2010_328_RGB_LATLNG.tif", "nc"),  # aerial RGBA, EPSG:4326
    ("landsat_rgb/RGB.byte.tif", "nc"),  # Landsat, UTM 18N, nodata 0 collar
    ("grayscale/SP27GTIF.TIF", "bw"),  # SPOT pan, State Plane (US ft)
    ("grayscale/erdas_spnad83.tif", "bw"),  # B&W with a rotated black collar, no EPSG code
]
REAL_FILES_QUICK = REAL_FILES[:1] + REAL_FILES[4:5]

# --- measuring a child process ----------------------------------------------------


@dataclass
class Stage:
    name: str
    wall: float
    cpu: float
    rss_mb: float | None
    summed: bool = True  # part of the contender's total


@dataclass
class Measurement:
    contender: str
    input: str
    wall: float  # the raster work: whole process(es) for CLIs, stage sum for Python children
    cpu: float
    rss_mb: float  # peak RSS of the child (max over the chain's processes)
    output: str
    stages: list[Stage] = field(default_factory=list)
    startup: float | None = None  # Python children: interpreter start-up and imports
    info: dict = field(default_factory=dict)
    wall_range: tuple[float, float] | None = None  # over the rounds
    size_mb: float | None = None
    psnr: float | None = None
    valid_pct: float | None = None
    cog_valid: bool | None = None
    note: str = ""


@dataclass
class ProcessUsage:
    wall: float
    cpu: float
    rss_mb: float


def run_measured(argv: list[str], env: dict, log: str) -> ProcessUsage:
    """Run ``argv`` to completion; its own wall, user+sys CPU and peak RSS (os.wait4)."""
    os.sync()  # dirty pages of the previous run are not this one's I/O
    with open(log, "ab") as out:
        out.write(("$ " + shlex.join(argv) + "\n").encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(log, errors="replace") as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{shlex.join(argv)} failed ({proc.returncode}); log {log}:\n{tail}")
    return ProcessUsage(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def child_env(**extra: str) -> dict:
    env = dict(os.environ)
    paths = [os.path.join(ROOT, "plugins"), ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


def run_python_child(kind: str, args: dict, log: str, env: dict | None = None) -> tuple[ProcessUsage, dict]:
    result_path = log + f".{kind}.json"
    if os.path.exists(result_path):
        os.remove(result_path)
    usage = run_measured([sys.executable, os.path.abspath(__file__), "--child", kind, json.dumps(args),
                          result_path], env or child_env(), log)
    with open(result_path) as f:
        return usage, json.load(f)


# --- the children (each runs in its own process; heavy imports live here) -------------


def _cpu_self() -> float:
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class _Stages:
    """Wall, CPU and peak RSS of each stage of a child (peak RSS reset before each one).

    Resetting VmHWM also resets what getrusage (so the parent's wait4) reports
    as ru_maxrss: ``peak_mb`` keeps the peak of the whole process.
    """

    def __init__(self):
        self.rows: list[dict] = []
        self.peak_mb = 0.0

    def result(self, **extra) -> dict:
        self.peak_mb = max(self.peak_mb, _hwm_mb() or 0.0)
        return {"stages": self.rows, "peak_mb": self.peak_mb, **extra}

    @contextmanager
    def stage(self, name: str, summed: bool = True):
        self.peak_mb = max(self.peak_mb, _hwm_mb() or 0.0)
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        wall, cpu = time.perf_counter(), _cpu_self()
        yield
        self.rows.append({"name": name, "wall": time.perf_counter() - wall, "cpu": _cpu_self() - cpu,
                          "rss_mb": _hwm_mb(), "summed": summed})


def child_generate(path: str, band: str, width: int, height: int, crs: str, collar: int) -> dict:
    from include.synthetic import make_frame
    part = path + ".part"
    make_frame(part, band, width, height, crs=crs, collar=collar)
    os.replace(part, path)
    return {}


def child_ls4(src: str, workdir: str, band: str) -> dict:
    from scipy import ndimage  # noqa: F401 - compress imports it late; an import is start-up here

    from ls4_ops import raster, turbo_gdal
    turbo_gdal.version()  # loads the COG writer's libgdal: start-up too
    stages = _Stages()
    compressed, cog = os.path.join(workdir, "compressed.tif"), os.path.join(workdir, "cog.tif")
    with stages.stage("compress"):
        info = raster.compress(src, compressed, band)
    with stages.stage("add_overviews"):
        factors = raster.add_overviews(compressed)
    with stages.stage("to_cog"):
        raster.to_cog(compressed, cog, band)
    with stages.stage("(validate_cog alone; included in to_cog)", summed=False):
        raster.validate_cog(cog)
    return stages.result(info={"reprojected": info["reprojected"], "src_crs": info["src_crs"],
                               "mask": info["mask"], "factors": factors,
                               "ovr_mb": _size_mb(compressed + ".ovr"),
                               "compressed_mb": _size_mb(compressed)})


def child_cogdriver(src: str, dst: str, band: str) -> dict:
    import rasterio
    import rasterio.shutil
    stages = _Stages()
    with stages.stage("COG driver"):
        rasterio.shutil.copy(src, dst, driver="COG", **COG_DRIVER_OPTIONS[band])
    return stages.result()


def child_original(src: str, workdir: str) -> dict:
    """The original nc chain through rasterio's GDAL 3.10 (same creation options)."""
    import rasterio
    import rasterio.shutil
    from rasterio.enums import Resampling
    stages = _Stages()
    compressed, cog = os.path.join(workdir, "input.tif"), os.path.join(workdir, "cog.tif")
    with rasterio.Env(**ORIGINAL_ENV), stages.stage("gdal_translate DEFLATE"):
        rasterio.shutil.copy(src, compressed, driver="GTiff", tiled=True, blockxsize=512, blockysize=512,
                             num_threads="ALL_CPUS", compress="DEFLATE", predictor=2)
    with rasterio.Env(TIFF_USE_OVR=True), stages.stage("gdaladdo -ro average"):
        with rasterio.open(compressed, "r+") as dataset:
            dataset.build_overviews([int(f) for f in ORIGINAL_GDALADDO_LAYERS.split()], Resampling.average)
    with rasterio.Env(GDAL_TIFF_OVR_BLOCKSIZE=512, **ORIGINAL_ENV), \
            stages.stage("gdal_translate COPY_SRC_OVERVIEWS JPEG"):
        rasterio.shutil.copy(compressed, cog, driver="GTiff", tiled=True, blockxsize=512, blockysize=512,
                             compress="JPEG", jpeg_quality=85, photometric="YCBCR", copy_src_overviews=True)
    return stages.result()


def child_quality(src: str, cogs: list[str], band: str) -> list[dict]:
    """PSNR of each COG's full-resolution image bands against the source.

    Only pixels valid in the source and in every COG on the same grid count,
    so that all contenders are scored on the same pixels (ls4 makes the black
    scan collar transparent; the others keep it, and flat black compresses
    almost losslessly).

    When a COG is on another grid (ls4 reprojected the source), the source is
    warped bilinearly onto the COG's grid first: the PSNR then measures what
    encoding lost, not what resampling changed.
    """
    import warnings

    import numpy as np
    import rasterio
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window
    from rio_cogeo.cogeo import cog_validate

    from ls4_ops.layout import BANDS

    warnings.simplefilter("ignore")
    bands = BANDS[band]
    indexes = list(range(1, bands + 1))

    def same_grid(a, b) -> bool:
        return a.crs == b.crs and a.shape == b.shape and a.transform.almost_equals(b.transform)

    results = []
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE", GDAL_CACHEMAX=256 * MIB), \
            rasterio.open(src) as source:
        for cog in cogs:
            sse = scored = shown = total = 0
            with rasterio.open(cog) as out:
                peers = [rasterio.open(path) for path in cogs if path != cog]
                peers = [peer for peer in peers if same_grid(peer, out) or peer.close()]
                on_source_grid = same_grid(source, out)
                view = source if on_source_grid else WarpedVRT(
                    source, crs=out.crs, transform=out.transform, width=out.width, height=out.height,
                    resampling=Resampling.bilinear,
                    add_alpha=source.colorinterp[-1] != ColorInterp.alpha)
                rows = max(1, (64 * MIB) // (out.width * 4 * bands))
                for row in range(0, out.height, rows):
                    window = Window(0, row, out.width, min(rows, out.height - row))
                    valid = out.dataset_mask(window=window) > 0
                    shown += int(np.count_nonzero(valid))
                    total += valid.size
                    valid &= view.dataset_mask(window=window) > 0
                    for peer in peers:
                        valid &= peer.dataset_mask(window=window) > 0
                    diff = out.read(indexes, window=window).astype(np.int32)
                    diff -= view.read(indexes, window=window)
                    diff = diff[:, valid]
                    sse += int(np.einsum("ij,ij->", diff, diff, dtype=np.int64))
                    scored += int(np.count_nonzero(valid))
                for dataset in peers + ([view] if view is not source else []):
                    dataset.close()
            mse = sse / max(1, scored * bands)
            is_valid, errors, _ = cog_validate(cog, quiet=True)
            results.append({"psnr": (10 * math.log10(255**2 / mse)) if mse else math.inf,
                            "valid_pct": 100 * shown / max(1, total),
                            "scored_pct": 100 * scored / max(1, total), "same_grid": on_source_grid,
                            "cog_valid": bool(is_valid), "cog_errors": errors})
    return results


CHILDREN = {"generate": child_generate, "ls4": child_ls4, "cogdriver": child_cogdriver,
            "original": child_original, "quality": child_quality}


def _size_mb(path: str) -> float | None:
    return os.path.getsize(path) / MIB if os.path.exists(path) else None


# --- the contenders (parent side) -----------------------------------------------------


def _stages_from(result: dict) -> list[Stage]:
    return [Stage(r["name"], r["wall"], r["cpu"], r["rss_mb"], r["summed"]) for r in result["stages"]]


def _python_measurement(contender: str, label: str, usage: ProcessUsage, result: dict,
                        output: str) -> Measurement:
    stages = _stages_from(result)
    work = [s for s in stages if s.summed]
    wall = sum(s.wall for s in work)
    rss_mb = max(usage.rss_mb, result.get("peak_mb") or 0.0)
    return Measurement(contender, label, wall, sum(s.cpu for s in work), rss_mb, output, stages,
                       startup=usage.wall - sum(s.wall for s in stages), info=result.get("info", {}))


def run_original_cli(src: str, band: str, workdir: str, label: str, log: str) -> Measurement:
    # The Lambdas named the intermediate /tmp/input.tif (and so its .ovr input.tif.ovr).
    compressed, cog = os.path.join(workdir, "input.tif"), os.path.join(workdir, "cog.tif")
    env = dict(os.environ, **ORIGINAL_ENV)
    addo_env = {k: v for k, v in os.environ.items() if k != "GDAL_DISABLE_READDIR_ON_OPEN"}
    steps = [
        ("gdal_translate DEFLATE", ["gdal_translate", *shlex.split(ORIGINAL_BANDS[band]),
                                    *shlex.split(ORIGINAL_COMPRESS_ARGS), src, compressed], env),
        ("gdaladdo -ro average", ["gdaladdo", *shlex.split(ORIGINAL_GDALADDO_ARGS), compressed,
                                  *shlex.split(ORIGINAL_GDALADDO_LAYERS)], addo_env),
        ("gdal_translate COPY_SRC_OVERVIEWS " + ("JPEG" if band == "nc" else "DEFLATE"),
         ["gdal_translate", *shlex.split(ORIGINAL_COG_ARGS[band]), compressed, cog], env),
    ]
    stages = []
    for name, argv, step_env in steps:
        usage = run_measured(argv, step_env, log)
        stages.append(Stage(name, usage.wall, usage.cpu, usage.rss_mb))
    info = {"ovr_mb": _size_mb(compressed + ".ovr"), "compressed_mb": _size_mb(compressed)}
    return Measurement("original", label, sum(s.wall for s in stages), sum(s.cpu for s in stages),
                       max(s.rss_mb for s in stages), cog, stages, info=info)


def run_cogdriver_cli(src: str, band: str, workdir: str, label: str, log: str) -> Measurement:
    cog = os.path.join(workdir, "cog.tif")
    options = [arg for key, value in COG_DRIVER_OPTIONS[band].items() for arg in ("-co", f"{key}={value}")]
    usage = run_measured(["gdal_translate", "-of", "COG", *options, src, cog], dict(os.environ), log)
    return Measurement("cogdriver", label, usage.wall, usage.cpu, usage.rss_mb, cog,
                       [Stage("gdal_translate -of COG", usage.wall, usage.cpu, usage.rss_mb)])


def run_gdalwarp_cog_cli(src: str, band: str, workdir: str, label: str, log: str) -> Measurement:
    cog = os.path.join(workdir, "cog.tif")
    options = [arg for key, value in COG_DRIVER_OPTIONS[band].items() for arg in ("-co", f"{key}={value}")]
    usage = run_measured(["gdalwarp", "-t_srs", "EPSG:3857", "-r", "bilinear", "-dstalpha", "-of", "COG",
                          *options, src, cog], dict(os.environ), log)
    return Measurement("gdalwarp-cog", label, usage.wall, usage.cpu, usage.rss_mb, cog,
                       [Stage("gdalwarp -of COG", usage.wall, usage.cpu, usage.rss_mb)])


def run_cogdriver_310(src: str, band: str, workdir: str, label: str, log: str) -> Measurement:
    cog = os.path.join(workdir, "cog.tif")
    usage, result = run_python_child("cogdriver", {"src": src, "dst": cog, "band": band}, log)
    return _python_measurement("cogdriver-3.10", label, usage, result, cog)


def run_original_310(src: str, band: str, workdir: str, label: str, log: str) -> Measurement:
    usage, result = run_python_child("original", {"src": src, "workdir": workdir}, log)
    return _python_measurement("original-3.10", label, usage, result, os.path.join(workdir, "cog.tif"))


def run_ls4(src: str, band: str, workdir: str, label: str, log: str) -> Measurement:
    usage, result = run_python_child("ls4", {"src": src, "workdir": workdir, "band": band}, log)
    return _python_measurement("ls4", label, usage, result, os.path.join(workdir, "cog.tif"))


RUNNERS = {
    "original": run_original_cli,
    "original-3.10": run_original_310,
    "cogdriver": run_cogdriver_cli,
    "cogdriver-3.10": run_cogdriver_310,
    "gdalwarp-cog": run_gdalwarp_cog_cli,
    "ls4": run_ls4,
}
CLI_CONTENDERS = {"original", "cogdriver", "gdalwarp-cog"}

# --- orchestration -------------------------------------------------------------------


def say(message: str) -> None:
    print(message, flush=True)


def warm(path: str) -> None:
    """Read a file once so every contender finds it in the page cache."""
    buffer = bytearray(8 * MIB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass


def ensure_input(spec: Synthetic, logs: str) -> None:
    if os.path.exists(spec.path):
        return
    os.makedirs(os.path.dirname(spec.path), exist_ok=True)
    start = time.perf_counter()
    usage, _ = run_python_child("generate", {"path": spec.path, "band": spec.band, "width": spec.width,
                                             "height": spec.height, "crs": spec.crs, "collar": spec.collar},
                                os.path.join(logs, "generate.log"))
    say(f"generated {os.path.relpath(spec.path, ROOT)} in {time.perf_counter() - start:.1f} s "
        f"(CPU {usage.cpu:.1f} s, peak RSS {usage.rss_mb:.0f} MB)")


def measure_contenders(src: str, band: str, label: str, contenders: list[str], rounds: int,
                       work: str, logs: str, key: str) -> list[Measurement]:
    """Each contender ``rounds`` times (interleaved); median wall/CPU, max RSS; then quality."""
    warm(src)
    runs: dict[str, list[Measurement]] = {c: [] for c in contenders}
    for round_no in range(rounds):
        for contender in contenders:
            workdir = os.path.join(work, key, contender)
            shutil.rmtree(workdir, ignore_errors=True)
            os.makedirs(workdir)
            log = os.path.join(logs, f"{key}.{contender}.log")
            m = RUNNERS[contender](src, band, workdir, label, log)
            runs[contender].append(m)
            # Intermediates go now (not timed); the COG stays for the quality check.
            for name in os.listdir(workdir):
                if os.path.join(workdir, name) != m.output:
                    os.remove(os.path.join(workdir, name))
            extra = f" (+{m.startup:.1f} s Python start-up)" if m.startup is not None else ""
            say(f"  [{round_no + 1}/{rounds}] {contender:<15} {label}: wall {m.wall:6.2f} s{extra}, "
                f"CPU {m.cpu:6.2f} s, peak RSS {m.rss_mb:5.0f} MB")
    results = [_median(measured) for measured in runs.values()]
    _, qualities = run_python_child("quality", {"src": src, "cogs": [m.output for m in results],
                                                "band": band},
                                    os.path.join(logs, f"{key}.quality.log"),
                                    child_env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE"))
    for m, quality in zip(results, qualities):
        m.size_mb = _size_mb(m.output)
        m.psnr, m.valid_pct, m.cog_valid = quality["psnr"], quality["valid_pct"], quality["cog_valid"]
        m.note = _note(m, band, quality)
    return results


def _median(runs: list[Measurement]) -> Measurement:
    m = runs[-1]
    if len(runs) == 1:
        return m
    m.wall_range = (min(r.wall for r in runs), max(r.wall for r in runs))
    m.wall = statistics.median(r.wall for r in runs)
    m.cpu = statistics.median(r.cpu for r in runs)
    m.rss_mb = max(r.rss_mb for r in runs)
    if m.startup is not None:
        m.startup = statistics.median(r.startup for r in runs)
    for i, stage in enumerate(m.stages):
        stage.wall = statistics.median(r.stages[i].wall for r in runs)
        stage.cpu = statistics.median(r.stages[i].cpu for r in runs)
        rss = [r.stages[i].rss_mb for r in runs if r.stages[i].rss_mb is not None]
        stage.rss_mb = max(rss) if rss else None
    return m


def _note(m: Measurement, band: str, quality: dict) -> str:
    notes = []
    if m.info.get("reprojected"):
        crs = m.info["src_crs"]
        notes.append(f"reprojected from {crs if len(crs) < 24 else 'a CRS without EPSG code'}")
    if m.contender == "ls4" and m.info.get("mask"):
        notes.append(f"mask: {m.info['mask']}")
    if m.contender.startswith("original") and band == "bw":
        notes.append("-a_nodata 256 clamps to 255: white becomes nodata")
    if m.info.get("ovr_mb") is not None:
        notes.append(f".ovr {m.info['ovr_mb']:.0f} MB")
    notes.append(f"PSNR on {quality['scored_pct']:.1f}% of px"
                 + ("" if quality["same_grid"] else ", vs the source warped to its grid"))
    if quality.get("cog_errors"):
        notes.append("COG errors: " + "; ".join(quality["cog_errors"])[:120])
    return "; ".join(notes)


# --- reporting -----------------------------------------------------------------------

TABLE_HEADER = ("| contender | input | wall s | wall min-max | CPU s | start-up s | peak RSS MB | size MB "
                "| PSNR dB | shown % | COG | vs original | vs cogdriver | notes |\n"
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "lossless"
    return f"{value:.{digits}f}"


def table(results: list[Measurement]) -> str:
    lines = [TABLE_HEADER]
    for m in results:
        same_input = {r.contender: r for r in results if r.input == m.input}
        ratios = [_fmt(m.wall / same_input[c].wall) if c in same_input else "-"
                  for c in ("original", "cogdriver")]
        spread = f"{m.wall_range[0]:.2f}-{m.wall_range[1]:.2f}" if m.wall_range else "-"
        lines.append(f"| {m.contender} | {m.input} | {_fmt(m.wall)} | {spread} | {_fmt(m.cpu)} "
                     f"| {_fmt(m.startup)} | {m.rss_mb:.0f} "
                     f"| {_fmt(m.size_mb)} | {_fmt(m.psnr)} | {_fmt(m.valid_pct, 1)} "
                     f"| {'yes' if m.cog_valid else 'no'} | {ratios[0]} | {ratios[1]} | {m.note} |")
    return "\n".join(lines)


def stage_table(results: list[Measurement]) -> str:
    lines = ["| contender | input | stage | wall s | CPU s | peak RSS MB |", "|---|---|---|---:|---:|---:|"]
    for m in results:
        if m.startup is not None:
            lines.append(f"| {m.contender} | {m.input} | (Python start-up + imports, not in the total) "
                         f"| {_fmt(m.startup)} | - | - |")
        for s in m.stages:
            rss = "-" if s.rss_mb is None else f"{s.rss_mb:.0f}"
            lines.append(f"| {m.contender} | {m.input} | {s.name} | {_fmt(s.wall)} | {_fmt(s.cpu)} | {rss} |")
    return "\n".join(lines)


def _find(results: list[Measurement], contender: str, label: str) -> Measurement | None:
    return next((m for m in results if m.contender == contender and m.input == label), None)


# --- main ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one round: a smoke run")
    parser.add_argument("--skip-large", action="store_true", help="skip the 20000 x 20000 frame")
    parser.add_argument("--skip-real", action="store_true", help="skip the real files")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds on the RGB frame of the ratios, median reported (default 5; "
                             "--quick 1); the grayscale frame gets at most 3")
    parser.add_argument("--keep", action="store_true", help="keep the outputs under benchmarks/out/work")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    have_cli = all(shutil.which(tool) for tool in ("gdal_translate", "gdaladdo", "gdalwarp"))

    work, logs = os.path.join(OUT, "work"), os.path.join(OUT, "logs")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(work)
    os.makedirs(logs)
    started = time.perf_counter()
    say(f"raster benchmark: {os.cpu_count()} CPUs, GDAL CLI: "
        f"{_gdal_cli_version() if have_cli else 'absent (CLI contenders skipped)'}, "
        f"outputs under {os.path.relpath(OUT, ROOT)}/")
    _say_load("at start")
    inputs = synthetic_inputs(args.quick)
    if args.skip_large:
        del inputs["large"]
    for spec in inputs.values():
        ensure_input(spec, logs)

    def cli(*names: str) -> list[str]:
        return [n for n in names if have_cli or n not in CLI_CONTENDERS]

    synthetic: list[Measurement] = []
    nc, bw = inputs["nc"], inputs["bw"]
    say(f"\n{nc.label} (EPSG:3857), {rounds} round(s):")
    synthetic += measure_contenders(nc.path, "nc", nc.label,
                                    cli("original") + ["original-3.10"] + cli("cogdriver")
                                    + ["cogdriver-3.10", "ls4"], rounds, work, logs, "nc")
    say(f"\n{bw.label} (EPSG:3857), {min(rounds, 3)} round(s):")
    synthetic += measure_contenders(bw.path, "bw", bw.label,
                                    cli("original", "cogdriver") + ["cogdriver-3.10", "ls4"],
                                    min(rounds, 3), work, logs, "bw")
    reproj = inputs["reproj"]
    say(f"\n{reproj.label}: ls4, and GDAL's one-pass gdalwarp -of COG:")
    synthetic += measure_contenders(reproj.path, "nc", reproj.label, cli("gdalwarp-cog") + ["ls4"], 1,
                                    work, logs, "reproj")
    large = inputs.get("large")
    if large:
        say(f"\n{large.label} (EPSG:3857), 1 round:")
        synthetic += measure_contenders(large.path, "nc", large.label, cli("original", "cogdriver") + ["ls4"],
                                        1, work, logs, "large")

    real: list[Measurement] = []
    if args.skip_real:
        say("\nreal files: skipped (--skip-real)")
    elif not os.path.isdir(REAL_DIR):
        say(f"\nreal files: skipped, {REAL_DIR} is absent")
    else:
        say(f"\nreal files from {REAL_DIR} (1 round each; ls4 also reprojects those not in EPSG:3857):")
        for i, (name, band) in enumerate(REAL_FILES_QUICK if args.quick else REAL_FILES):
            path = os.path.join(REAL_DIR, name)
            if not os.path.exists(path):
                say(f"  {name}: absent, skipped")
                continue
            real += measure_contenders(path, band, name, cli("original", "cogdriver") + ["ls4"], 1,
                                       work, logs, f"real{i}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    say("\n## Synthetic frames (wall/CPU: median of the rounds; ls4 = sum of its three stages)\n")
    say(table(synthetic))
    if real:
        say("\n## Real files\n")
        say(table(real))
    say("\n## Stages\n")
    say(stage_table(synthetic))
    say(f"\nlogs: {os.path.relpath(logs, ROOT)}/; total benchmark time {time.perf_counter() - started:.0f} s")
    _say_load("at the end")

    ls4_nc = _find(synthetic, "ls4", nc.label)
    original, cogdriver = _find(synthetic, "original", nc.label), _find(synthetic, "cogdriver", nc.label)
    vs_original = ls4_nc.wall / original.wall if original else None
    vs_cogdriver = ls4_nc.wall / cogdriver.wall if cogdriver else None
    cpu_vs_cogdriver = ls4_nc.cpu / cogdriver.cpu if cogdriver else None
    ls4_large = _find(synthetic, "ls4", large.label) if large else None
    say("\ntargets:")
    _target(f"ls4/original wall on {nc.label}", vs_original, "<=", 0.5)
    _target(f"ls4/cogdriver wall on {nc.label}", vs_cogdriver, "<=", 1.3)
    _target(f"ls4/cogdriver CPU on {nc.label}", cpu_vs_cogdriver, "<=", 1.3)
    for other in ("original", "cogdriver", "cogdriver-3.10"):
        base = _find(synthetic, other, nc.label)
        if base:
            say(f"  (for information) ls4/{other} on {nc.label}: CPU {ls4_nc.cpu / base.cpu:.2f}, "
                f"wall {ls4_nc.wall / base.wall:.2f}, wall incl. ls4's Python start-up "
                f"{(ls4_nc.wall + ls4_nc.startup) / base.wall:.2f}")
    for label in (nc.label, bw.label):
        ls4 = _find(synthetic, "ls4", label)
        for other in ("original", "cogdriver"):
            base = _find(synthetic, other, label)
            if base:
                _target(f"ls4 PSNR - {other} PSNR on {label} (dB)", _psnr_gap(ls4.psnr, base.psnr),
                        ">=", -0.05)
    if ls4_large:
        _target(f"ls4 peak RSS on {large.label} (MB)", ls4_large.rss_mb, "<", 1024)
    else:
        say("  ls4 peak RSS on the large frame: not measured (--skip-large)")
    peak = f"{ls4_large.rss_mb:.0f}" if ls4_large else "skipped"
    ratios = [_fmt(r) if r is not None else "n/a" for r in (vs_original, vs_cogdriver, cpu_vs_cogdriver)]
    say(f"raster: ls4/original={ratios[0]} ls4/cogdriver={ratios[1]} cpu_ls4/cogdriver={ratios[2]} "
        f"peak_rss_mb={peak}")


def _say_load(when: str) -> None:
    load = os.getloadavg()[0]
    busy = " - other processes are using the CPUs: wall times are noisy" if load > 0.5 else ""
    say(f"load average {when}: {load:.2f}{busy}")


def _psnr_gap(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if math.isinf(a) and math.isinf(b):
        return 0.0
    return a - b


def _target(what: str, value: float | None, op: str, limit: float) -> None:
    if value is None:
        say(f"  {what}: n/a")
        return
    ok = {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]
    say(f"  {what}: {value:.2f} (target {op} {limit:g}): {'met' if ok else 'NOT met'}")


def _gdal_cli_version() -> str:
    return subprocess.run(["gdal_translate", "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _, _, kind, child_args, result_file = sys.argv
        sys.path[:0] = [os.path.join(ROOT, "plugins"), ROOT]
        child_result = CHILDREN[kind](**json.loads(child_args))
        with open(result_file, "w") as f:
            json.dump(child_result, f)
    else:
        main()
