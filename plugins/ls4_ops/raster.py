"""Raster steps of a georef upload (SPEC steps 3-6).

``compress`` checks an upload, reprojects it to EPSG:3857 when needed and
writes a lossless tiled GeoTIFF with an internal transparency mask;
``add_overviews`` computes its overviews once, into an external ``.ovr``;
``to_cog`` assembles the final COG from the two and validates it.

Everything works window by window: peak memory does not grow with the size
of a frame.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Iterator, TypeVar

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from ls4_ops import turbo_gdal
from ls4_ops.collar import ScanCollar, ceil_div
from ls4_ops.errors import BadUpload
from ls4_ops.layout import BANDS
from ls4_ops.profiles import PROFILES
from ls4_ops.settings import Settings
from ls4_ops.tileindex import INDEX_SRID


T = TypeVar("T")
R = TypeVar("R")

# COGs are in the tile index's CRS, so the two can never disagree.
TARGET_CRS = CRS.from_epsg(INDEX_SRID)

MAX_OVERVIEW_FACTOR = 64

# Failures that say nothing about the file itself: a retry may succeed.
_NOT_THE_FILES_FAULT = ("no such file", "does not exist", "http", "curl", "timed out",
                        "timeout", "connection", "access denied", "permission denied",
                        "forbidden", "slow down")

_IMAGE_BANDS_DESCRIPTION = {"bw": "1 grayscale band", "nc": "3 bands (red, green, blue)"}


class CogValidationError(ValueError):
    """A COG written by ls4 fails validation: a bug in ls4, not in the upload."""


# --- step 3-4: compress ---------------------------------------------------


def compress(src: str, dst: str, band: str, key: str | None = None,
             max_pixels: int = Settings.max_pixels) -> dict:
    """Write ``src`` as a lossless, tiled EPSG:3857 GeoTIFF at ``dst``.

    Raises ``BadUpload`` for anything no retry can fix: an empty, damaged or
    truncated file, no georeferencing (a CRS plus a geotransform, or GCPs
    with a CRS), pixels that are not 8-bit (no stretch is guessed), a band
    count that does not fit ``band`` (bw: 1 band, nc: 3, each optionally
    followed by an alpha band), or more than ``max_pixels`` pixels (told
    from the header, before any is read).

    An upload already in EPSG:3857 with a north-up geotransform keeps its
    exact grid. Anything else (another CRS, a rotated geotransform, GCPs) is
    warped bilinearly to EPSG:3857 on the grid GDAL suggests, which keeps the
    source resolution; GCP-only uploads are warped with GDAL's GCP polynomial
    transformer, its order chosen from the number of GCPs.

    The internal mask is the upload's own validity (alpha band, mask band or
    nodata), minus the area outside the warped footprint, minus the black
    collar of a scanned frame (see ``ls4_ops.collar``). No nodata value is
    written: every 8-bit value, white included, stays a colour.
    """
    key = key or src
    with rasterio.Env(**PROFILES.env["compress"]), _open_upload(src, key) as upload:
        _reject_unusable(upload, band, key, max_pixels)
        reprojected = _needs_warp(upload)
        with _in_target_crs(upload, reprojected) as view:
            visible, collar = _write_masked(view, dst, band, key)
            if not visible:
                raise BadUpload(key, "no pixel is left visible: all are transparent (alpha, mask "
                                     "or nodata) or dark and connected to the border; check its "
                                     "nodata value and transparency and upload it again")
            return {
                "width": view.width,
                "height": view.height,
                "count": BANDS[band],
                "crs": _crs_name(TARGET_CRS),
                "bounds": tuple(view.bounds),
                "reprojected": reprojected,
                "src_crs": _crs_name(_source_crs(upload)),
                "mask": _describe_mask(upload, reprojected, collar > 0),
            }


@contextmanager
def _open_upload(src: str, key: str) -> Iterator[DatasetReader]:
    if not src.startswith("/vsi") and os.path.isfile(src) and os.path.getsize(src) == 0:
        raise BadUpload(key, "the file is empty (0 bytes): upload the GeoTIFF again")
    with _file_errors_as_bad_upload(key, "it cannot be opened as a GeoTIFF",
                                    "the file is empty, damaged, truncated or not a TIFF"), \
            warnings.catch_warnings():
        # A plain TIFF is reported below, as a BadUpload.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        upload = rasterio.open(src, driver="GTiff")
    with upload:
        yield upload


@contextmanager
def _file_errors_as_bad_upload(key: str, problem: str, cause: str) -> Iterator[None]:
    """GDAL read errors that are the file's fault become a BadUpload; others stay retryable."""
    try:
        yield
    except RasterioIOError as err:
        if not _is_the_files_fault(err):
            raise
        raise BadUpload(key, f"{problem} ({_gdal_message(err)}): {cause}; export it again and "
                             "re-upload it") from err


def _error_chain(err: BaseException) -> list[BaseException]:
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _gdal_message(err: BaseException) -> str:
    """The most specific message in the chain (rasterio's own says 'see previous exception')."""
    return str(_error_chain(err)[-1])


def _is_the_files_fault(err: BaseException) -> bool:
    text = " ".join(str(e) for e in _error_chain(err)).lower()
    return not any(marker in text for marker in _NOT_THE_FILES_FAULT)


def _reject_unusable(upload: DatasetReader, band: str, key: str, max_pixels: int) -> None:
    """Raise one BadUpload listing every problem, so one fix-and-re-upload suffices."""
    problems = [p for p in (_size_problem(upload, max_pixels),
                            _georeferencing_problem(upload),
                            _dtype_problem(upload),
                            _band_problem(upload, band)) if p]
    if problems:
        raise BadUpload(key, "; ".join(problems))


def _size_problem(upload: DatasetReader, max_pixels: int) -> str | None:
    pixels = upload.width * upload.height
    if pixels <= max_pixels:
        return None
    stored = os.path.getsize(upload.name) if os.path.isfile(upload.name) else None
    in_file = f" in a file of {stored / 2**20:,.1f} MB" if stored is not None else ""
    return (f"its header claims {upload.width:,} x {upload.height:,} pixels ({pixels / 1e6:,.0f} Mpx){in_file}, "
            f"more than ls4 takes ({max_pixels / 1e6:,.0f} Mpx, LS4_MAX_PIXELS): if the image is real, split it "
            "or raise the limit; if not, the file is damaged: export it again")


def _georeferencing_problem(upload: DatasetReader) -> str | None:
    gcps, gcp_crs = upload.gcps
    if gcps:
        if gcp_crs is None:
            return ("it has ground control points but no coordinate reference system: "
                    "export it again with the CRS of its GCPs")
        return None
    if upload.transform.is_identity:
        return ("it is not georeferenced (no coordinate reference system, no geotransform, "
                "no ground control points): georeference it and export it as a GeoTIFF")
    if upload.crs is None:
        return ("it has a geotransform but no coordinate reference system (a world file "
                "alone is not enough): export it as a GeoTIFF with its CRS")
    return None


def _dtype_problem(upload: DatasetReader) -> str | None:
    dtypes = sorted(set(upload.dtypes))
    if dtypes == ["uint8"]:
        return None
    return (f"its pixels are {'/'.join(dtypes)}, but ls4 publishes 8-bit imagery and does not "
            "guess a contrast stretch: convert it to 8-bit (Byte) with the stretch you want "
            "(e.g. gdal_translate -ot Byte -scale ...) and upload it again")


def _band_problem(upload: DatasetReader, band: str) -> str | None:
    interp = list(upload.colorinterp)
    if interp[0] == ColorInterp.palette:
        return ("its colours come from a palette: expand it to RGB (gdal_translate -expand rgb) "
                "and upload it under nc/")
    expected = BANDS[band]
    if upload.count == expected:
        return None
    if upload.count == expected + 1 and interp[-1] == ColorInterp.alpha:
        return None
    names = ", ".join(i.name for i in interp)
    problem = (f"it has {upload.count} band(s) ({names}), but uploads under {band}/ need "
               f"{_IMAGE_BANDS_DESCRIPTION[band]}, optionally followed by an alpha band")
    if upload.count == expected + 1:
        return problem + (f": band {upload.count} is not marked as alpha; "
                          "drop it or mark it as alpha")
    other = "nc" if band == "bw" else "bw"
    if upload.count in (BANDS[other], BANDS[other] + 1):
        return problem + f": upload it under {other}/ instead, or convert it"
    return problem + ": keep only the image bands and upload it again"


def _source_crs(upload: DatasetReader) -> CRS:
    gcps, gcp_crs = upload.gcps
    return gcp_crs if gcps else upload.crs


def _crs_name(crs: CRS) -> str:
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else crs.to_wkt()


def _needs_warp(upload: DatasetReader) -> bool:
    """Anything but EPSG:3857 on a north-up grid is warped."""
    if upload.gcps[0] or upload.crs.to_epsg() != TARGET_CRS.to_epsg():
        return True
    t = upload.transform
    return not (t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0)


def _has_alpha(upload: DatasetReader) -> bool:
    return upload.colorinterp[-1] == ColorInterp.alpha


@contextmanager
def _in_target_crs(upload: DatasetReader, reprojected: bool):
    """The upload as seen on the output grid: itself, or a warped view of it."""
    if not reprojected:
        yield upload
        return
    # The added alpha band carries the source's validity (mask, nodata) and the
    # area outside the warped footprint; an upload's own alpha band does both.
    with WarpedVRT(upload, crs=TARGET_CRS, resampling=Resampling.bilinear,
                   add_alpha=not _has_alpha(upload), NUM_THREADS="ALL_CPUS") as vrt:
        yield vrt


def _write_masked(view, dst_path: str, band: str, key: str) -> tuple[int, int]:
    """Copy pixels and validity to ``dst_path``, then clear the scan collar.

    One pass reads the source (maybe over the network) once: it writes
    pixels and mask while ``ScanCollar`` records where the collar may be; a
    second pass, over ``dst_path`` only, clears it. Returns the number of
    pixels left opaque and the number of collar pixels made transparent.
    """
    profile = PROFILES.intermediate[band]
    indexes = list(range(1, profile["count"] + 1))
    opaque = 0
    with rasterio.open(dst_path, "w+", **profile, width=view.width, height=view.height,
                       crs=TARGET_CRS, transform=view.transform) as dst:
        collar = ScanCollar(dst)

        def read(window: Window) -> tuple[Window, np.ndarray, np.ndarray]:
            with _file_errors_as_bad_upload(key, "its pixels cannot be read", "the file is corrupt or "
                                            "truncated, e.g. by an interrupted export or upload"):
                return window, view.read(indexes, window=window), view.dataset_mask(window=window) > 0

        for window, pixels, valid in _one_ahead(read, (window for _, window in dst.block_windows(1))):
            dst.write(pixels, window=window)
            dst.write_mask(valid, window=window)
            collar.record(window, pixels, valid)
            opaque += np.count_nonzero(valid)
        cleared = collar.clear()
    return opaque - cleared, cleared


def _describe_mask(upload: DatasetReader, reprojected: bool, scan_collar: bool) -> str:
    flags = upload.mask_flag_enums[0]
    if MaskFlags.alpha in flags:
        parts = ["alpha band"]
    elif MaskFlags.per_dataset in flags:
        parts = ["mask band"]
    elif MaskFlags.nodata in flags:
        parts = [f"nodata {upload.nodata:g}"]
    else:
        parts = []
    if reprojected:
        parts.append("reprojection footprint")
    if scan_collar:
        parts.append("scan collar")
    return " + ".join(parts) or "none (all pixels valid)"


# --- step 5: overviews ----------------------------------------------------


def overview_factors(width: int, height: int) -> list[int]:
    """2, 4, 8, ... up to 64, until the smallest overview fits one 512 px block."""
    long_side = max(width, height)
    factors = []
    factor = 2
    while factor <= MAX_OVERVIEW_FACTOR and ceil_div(long_side, factor // 2) > PROFILES.block_size:
        factors.append(factor)
        factor *= 2
    return factors


def overview_file(path: str) -> str:
    """Where GDAL keeps the external overviews of ``path`` (and looks for them)."""
    return path + ".ovr"


def add_overviews(path: str) -> list[int]:
    """Write the averaged overviews of ``path`` to ``overview_file(path)``; return the factors.

    ``path`` itself is not modified. Each overview pixel averages the valid
    full-resolution pixels under it (GDAL's masked average): the transparent
    collar does not darken the frame's edges when zoomed out. The mask's own
    overviews are left to ``to_cog``, which derives them from the
    full-resolution mask (GDAL 3.10 cannot store overviews of an internal
    mask in an external .ovr).

    When every level halves the frame exactly (its width and height are
    multiples of the largest factor), the averages are computed in numpy,
    bit for bit the same as GDAL's: GDAL's masked averaging has no SIMD path
    (2.1 s of CPU on the 6000x6000 benchmark frame, against 0.5 s here).
    Other sizes are left to GDAL, whose overview pixels then cover
    fractional source pixels with fractional weights.
    """
    ovr = overview_file(path)
    if os.path.exists(ovr):
        os.remove(ovr)  # a re-run starts clean instead of updating stale levels
    with rasterio.Env(**PROFILES.env["overviews"]), rasterio.open(path) as dataset:
        factors = overview_factors(dataset.width, dataset.height)
        if factors and _halves_exactly(dataset, factors[-1]):
            _average_in_numpy(dataset, ovr, factors)
            return factors
    if factors:
        # TIFF_USE_OVR: into the external .ovr, not into the intermediate.
        with rasterio.Env(**PROFILES.env["overviews"], **PROFILES.intermediate_overviews, TIFF_USE_OVR=True), \
                rasterio.open(path, "r+") as dataset:
            dataset.build_overviews(factors, Resampling.average)
    return factors


def _halves_exactly(dataset: DatasetReader, largest_factor: int) -> bool:
    return dataset.width % largest_factor == 0 and dataset.height % largest_factor == 0


@contextmanager
def _ungeoreferenced() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # an .ovr has no georeferencing
        yield


def _average_in_numpy(dataset: DatasetReader, ovr: str, factors: list[int]) -> None:
    _create_overview_file(ovr, dataset, factors)
    with ExitStack() as stack, _ungeoreferenced():
        # GDAL numbers the TIFF directories from 1: the first level, then its overviews.
        levels = [stack.enter_context(rasterio.open(f"GTIFF_DIR:{i}:{ovr}", "r+"))
                  for i in range(1, len(factors) + 1)]

        def averaged(window: Window) -> tuple[Window, list[np.ndarray]]:
            pixels = dataset.read(window=window)
            valid = dataset.dataset_mask(window=window) > 0
            return window, list(_masked_averages(pixels, valid, len(factors)))

        # Bands of rows a multiple of every factor high: each level gets whole rows.
        for window, averages in _one_ahead(averaged, _row_bands(dataset, PROFILES.block_size)):
            for level, factor, average in zip(levels, factors, averages):
                level.write(average, window=Window(0, window.row_off // factor, average.shape[2], average.shape[1]))


def _create_overview_file(ovr: str, dataset: DatasetReader, factors: list[int]) -> None:
    """An empty .ovr laid out as GDAL's overview builder writes one: the first level, the others its overviews."""
    options = PROFILES.intermediate_overviews
    with _ungeoreferenced(), rasterio.open(
            ovr, "w", driver="GTiff", dtype="uint8", count=dataset.count,
            width=dataset.width // factors[0], height=dataset.height // factors[0],
            tiled=True, blockxsize=options["GDAL_TIFF_OVR_BLOCKSIZE"], blockysize=options["GDAL_TIFF_OVR_BLOCKSIZE"],
            compress=options["COMPRESS_OVERVIEW"], interleave=options["INTERLEAVE_OVERVIEW"],
            bigtiff=options["BIGTIFF_OVERVIEW"], photometric="RGB" if dataset.count == 3 else "MINISBLACK",
            sparse_ok=True) as first:
        # Nearest over a sparse (all-zero) level costs nothing: only the layout is wanted.
        first.build_overviews([f // factors[0] for f in factors[1:]], Resampling.nearest)


def _one_ahead(function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``function(item)`` of each item in turn, the next one computed in a thread meanwhile.

    GDAL and numpy release the GIL: reading (and averaging) the next block
    or band of rows overlaps writing the last one, on another core. Only
    the thread calls ``function``, so a dataset it reads is read by one
    thread at a time.
    """
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for item in items:
            upcoming = pool.submit(function, item)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


def _row_bands(dataset: DatasetReader, rows: int) -> Iterator[Window]:
    for row in range(0, dataset.height, rows):
        yield Window(0, row, dataset.width, min(rows, dataset.height - row))


def _masked_averages(pixels: np.ndarray, valid: np.ndarray, count: int) -> Iterator[np.ndarray]:
    """The masked 2x, 4x, ... averages of ``pixels`` (bands, rows, cols), ``count`` levels.

    As GDAL does, every level is computed from the exact sums of the
    full-resolution pixels, not from the rounded level before, and rounded
    half up; a pixel with no valid one under it is 0.
    """
    # The sums of 4^count bytes fit uint32, the counts uint16; level 1's fit
    # uint16 and uint8, numpy's fastest loops over the largest arrays.
    sums = _sum_pairs(pixels if valid.all() else pixels * valid, np.uint16)
    counts = _sum_pairs(valid.view(np.uint8), np.uint8)
    yield _rounded_mean(sums, counts)
    sums, counts = sums.astype(np.uint32), counts.astype(np.uint16)
    for _ in range(count - 1):
        sums, counts = _sum_pairs(sums, np.uint32), _sum_pairs(counts, np.uint16)
        yield _rounded_mean(sums, counts)


def _sum_pairs(values: np.ndarray, dtype) -> np.ndarray:
    """Sums of 2 x 2 cells over the last two axes (both even)."""
    summed = values[..., 0::2, :].astype(dtype)
    summed += values[..., 1::2, :]
    pairs = summed[..., 0::2]
    pairs += summed[..., 1::2]
    return pairs


def _rounded_mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``sums / counts`` rounded half up, 0 where the count is 0, as uint8.

    float32 rounds the same as integers would: with counts of at most 4^6, a
    mean that is not a tie (k + 1/2) is at least 1/8192 away from one, far
    more than float32's error on values up to 255.5.
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # the zero counts, set to 0 below
        mean = sums.astype(np.float32)
        mean /= counts
        mean += 0.5
    np.floor(mean, out=mean)
    mean[:, counts == 0] = 0
    return mean.astype(np.uint8)


# --- step 6: COG ----------------------------------------------------------


def to_cog(src: str, dst: str, band: str, key: str | None = None) -> dict:
    """Write the COG of a compressed file (and its ``.ovr``) to ``dst`` and validate it.

    GDAL's COG driver is used rather than GTiff with COPY_SRC_OVERVIEWS: with
    an external .ovr the latter writes mask overviews that are all opaque, so
    zoomed-out views would show the collar black. A JPEG COG is written by
    the GDAL bundled in pyogrio's wheel, for its libjpeg-turbo (see
    ``ls4_ops.turbo_gdal``); a DEFLATE one by rasterio's, for its libdeflate.
    """
    options = PROFILES.cog[band]
    if options["COMPRESS"] == "JPEG":
        turbo_gdal.translate(src, dst, "COG", options, PROFILES.env["cog"])
    else:  # rasterio's GDAL has libdeflate, pyogrio's only zlib (bw 8000x8000: 1.8 s of CPU against 3.5)
        with rasterio.Env(**PROFILES.env["cog"]):
            rasterio.shutil.copy(src, dst, driver="COG", **options)
    validate_cog(dst, key)
    with rasterio.open(dst) as cog:
        return {
            "width": cog.width,
            "height": cog.height,
            "count": cog.count,
            "bounds": tuple(cog.bounds),
            "overviews": cog.overviews(1),
            "size": os.path.getsize(dst),
        }


def validate_cog(path: str, key: str | None = None) -> None:
    """Raise CogValidationError unless ``path`` is a valid COG."""
    is_valid, errors, _ = cog_validate(path, quiet=True)
    if not is_valid:
        raise CogValidationError(f"{key or path}: not a valid COG: {'; '.join(errors)}")
