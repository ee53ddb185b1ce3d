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
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window, intersect, intersection
from rio_cogeo.cogeo import cog_validate
from rio_cogeo.profiles import cog_profiles
from scipy import ndimage

from ls4_ops.errors import BadUpload
from ls4_ops.layout import BANDS


TARGET_CRS = CRS.from_epsg(3857)
BLOCK_SIZE = 512
# DEFLATE level of the compressed GeoTIFF, which to_cog rewrites. On the
# 6000x6000 benchmark frame, level 3 takes 1.6x as long for a 3% smaller file.
INTERMEDIATE_ZLEVEL = 1
# Overviews are stored as ZSTD: as lossless as DEFLATE, 1.8x faster here
# (GDAL 3.10 ignores ZLEVEL_OVERVIEW, so DEFLATE would cost level 6).
INTERMEDIATE_OVERVIEW_CODEC = "ZSTD"
# rasterio takes GDAL_CACHEMAX in bytes (a small int would mean a few bytes).
GDAL_CACHEMAX = 256 * 2**20

# Scan collar: pixels at most this dark on every band, connected to the image
# edge through such pixels (or through transparent ones), become transparent.
COLLAR_MAX_VALUE = 8
# The collar is found on a grid of cells of f x f pixels (f a power of two),
# with at most this many cells on the long side.
COLLAR_GRID_MAX_CELLS = 2048

MAX_OVERVIEW_FACTOR = 64

COG_PROFILE = {"bw": "deflate", "nc": "jpeg"}
JPEG_QUALITY = 85

# Failures that say nothing about the file itself: a retry may succeed.
_NOT_THE_FILES_FAULT = ("no such file", "does not exist", "http", "curl", "timed out",
                        "timeout", "connection", "access denied", "permission denied",
                        "forbidden", "slow down")

_IMAGE_BANDS_DESCRIPTION = {"bw": "1 grayscale band", "nc": "3 bands (red, green, blue)"}


class CogValidationError(ValueError):
    """A COG written by ls4 fails validation: a bug in ls4, not in the upload."""


# --- step 3-4: compress ---------------------------------------------------


def compress(src: str, dst: str, band: str, key: str | None = None) -> dict:
    """Write ``src`` as a lossless, tiled EPSG:3857 GeoTIFF at ``dst``.

    Raises ``BadUpload`` for anything no retry can fix: an empty, damaged or
    truncated file, no georeferencing (a CRS plus a geotransform, or GCPs
    with a CRS), pixels that are not 8-bit (no stretch is guessed), or a band
    count that does not fit ``band`` (bw: 1 band, nc: 3, each optionally
    followed by an alpha band).

    An upload already in EPSG:3857 with a north-up geotransform keeps its
    exact grid. Anything else (another CRS, a rotated geotransform, GCPs) is
    warped bilinearly to EPSG:3857 on the grid GDAL suggests, which keeps the
    source resolution; GCP-only uploads are warped with GDAL's GCP polynomial
    transformer, its order chosen from the number of GCPs.

    The internal mask is the upload's own validity (alpha band, mask band or
    nodata), minus the area outside the warped footprint, minus the black
    collar of a scanned frame (see ``COLLAR_MAX_VALUE``). No nodata value is
    written: every 8-bit value, white included, stays a colour.
    """
    key = key or src
    image_bands = BANDS[band]
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX, GDAL_TIFF_INTERNAL_MASK=True), \
            _open_upload(src, key) as upload:
        _reject_unusable(upload, band, key)
        reprojected = _needs_warp(upload)
        with _in_target_crs(upload, reprojected) as view:
            visible, collar = _write_masked(view, dst, image_bands, key)
            if not visible:
                raise BadUpload(key, "no pixel is left visible: all are transparent (alpha, mask "
                                     "or nodata) or dark and connected to the border; check its "
                                     "nodata value and transparency and upload it again")
            return {
                "width": view.width,
                "height": view.height,
                "count": image_bands,
                "crs": "EPSG:3857",
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


def _reject_unusable(upload: DatasetReader, band: str, key: str) -> None:
    """Raise one BadUpload listing every problem, so one fix-and-re-upload suffices."""
    problems = [p for p in (_georeferencing_problem(upload),
                            _dtype_problem(upload),
                            _band_problem(upload, band)) if p]
    if problems:
        raise BadUpload(key, "; ".join(problems))


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


def _output_profile(view, image_bands: int) -> dict:
    return {
        "driver": "GTiff",
        "width": view.width,
        "height": view.height,
        "count": image_bands,
        "dtype": "uint8",
        "crs": TARGET_CRS,
        "transform": view.transform,
        "nodata": None,
        "photometric": "RGB" if image_bands == 3 else "MINISBLACK",
        "interleave": "pixel",
        "tiled": True,
        "blockxsize": BLOCK_SIZE,
        "blockysize": BLOCK_SIZE,
        "compress": "DEFLATE",
        "predictor": 2,
        "zlevel": INTERMEDIATE_ZLEVEL,
        "num_threads": "ALL_CPUS",
        "bigtiff": "IF_SAFER",
    }


def _write_masked(view, dst_path: str, image_bands: int, key: str) -> tuple[int, int]:
    """Copy pixels and validity to ``dst_path``, then clear the scan collar.

    One pass reads the source (maybe over the network) once: it writes
    pixels and mask and records, per cell, whether every pixel is dark or
    transparent and whether any pixel is dark but opaque. The collar is found
    on that grid; a second pass re-reads only the blocks near the collar
    from ``dst_path`` and rewrites their mask. Returns the number of pixels
    left opaque and the number of collar pixels made transparent.
    """
    indexes = list(range(1, image_bands + 1))
    grid = _CollarGrid(view.width, view.height)
    opaque = cleared = 0
    with rasterio.open(dst_path, "w+", **_output_profile(view, image_bands)) as dst:
        for _, window in dst.block_windows(1):
            with _file_errors_as_bad_upload(key, "its pixels cannot be read", "the file is corrupt or "
                                            "truncated, e.g. by an interrupted export or upload"):
                pixels = view.read(indexes, window=window)
                valid = view.dataset_mask(window=window) > 0
            dst.write(pixels, window=window)
            dst.write_mask(valid, window=window)
            grid.record(window, pixels, valid)
            opaque += np.count_nonzero(valid)
        collar, near_collar = grid.collar_cells()
        for _, window in dst.block_windows(1):
            if grid.may_hold_collar(window, near_collar):
                cleared += _clear_collar(dst, window, grid, collar, near_collar)
    return opaque - cleared, cleared


def _brightest(pixels: np.ndarray) -> np.ndarray:
    """Per pixel, its brightest band: a pixel is dark when even that is dark."""
    return pixels.max(axis=0)


def _passable(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels the collar may cross: dark on every band, or transparent."""
    return (_brightest(pixels) <= COLLAR_MAX_VALUE) | ~valid


class _CollarGrid:
    """A low-resolution view of the output, enough to find the scan collar.

    A cell is f x f output pixels (f a power of two dividing BLOCK_SIZE, so
    blocks hold whole cells). ``passable`` cells are dark or transparent in
    every pixel; edge-connected passable cells are the collar.
    """

    def __init__(self, width: int, height: int):
        self.factor = 1
        while (max(width, height) + self.factor - 1) // self.factor > COLLAR_GRID_MAX_CELLS \
                and self.factor < BLOCK_SIZE:
            self.factor *= 2
        shape = (-(-height // self.factor), -(-width // self.factor))
        self.passable = np.zeros(shape, bool)
        self.dark_opaque = np.zeros(shape, bool)

    def cells(self, window: Window) -> tuple[slice, slice]:
        f = self.factor
        return (slice(window.row_off // f, -(-(window.row_off + window.height) // f)),
                slice(window.col_off // f, -(-(window.col_off + window.width) // f)))

    def record(self, window: Window, pixels: np.ndarray, valid: np.ndarray) -> None:
        brightest = _brightest(pixels)
        if brightest.min() > COLLAR_MAX_VALUE and valid.all():
            return  # no dark or transparent pixel: the cells stay neither passable nor dark
        cells = self.cells(window)
        # A cell is passable when its brightest valid pixel is dark (transparent
        # ones count as 0), and dark-opaque when its darkest valid pixel is.
        self.passable[cells] = self._reduce(np.where(valid, brightest, 0), np.maximum) <= COLLAR_MAX_VALUE
        self.dark_opaque[cells] = self._reduce(np.where(valid, brightest, 255), np.minimum) <= COLLAR_MAX_VALUE

    def _reduce(self, values: np.ndarray, how) -> np.ndarray:
        """Combine each f x f cell with ``how`` (np.maximum or np.minimum) into one value."""
        f = self.factor
        rows, cols = values.shape
        if rows % f or cols % f:
            # Cells cut by the image's right or bottom edge: missing pixels
            # take the neutral value (passable beyond the edge, never dark-opaque).
            neutral = 0 if how is np.maximum else 255
            values = np.pad(values, ((0, -rows % f), (0, -cols % f)), constant_values=neutral)
        # Halving in place of a reshape-and-reduce keeps numpy on contiguous
        # rows, several times faster for the small cells used here.
        while f > 1:
            values = how(values[0::2], values[1::2])
            values = how(values[:, 0::2], values[:, 1::2])
            f //= 2
        return values

    def collar_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Collar cells, and those within one cell of them (where the collar's edge lies)."""
        labels, _ = ndimage.label(self.passable)
        edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        collar = np.isin(labels, np.unique(edge[edge > 0]))
        near = ndimage.binary_dilation(collar, structure=np.ones((3, 3), bool))
        return collar, near

    def may_hold_collar(self, window: Window, near_collar: np.ndarray) -> bool:
        cells = self.cells(window)
        return bool((near_collar[cells] & self.dark_opaque[cells]).any())

    def around(self, cells: np.ndarray, window: Window) -> Window | None:
        """The part of ``window`` covered by the bounding box of ``cells`` (None if none)."""
        rows, cols = self.cells(window)
        inside = cells[rows, cols]
        hit_rows, hit_cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if not hit_rows.size:
            return None
        f = self.factor
        box = Window((cols.start + hit_cols[0]) * f, (rows.start + hit_rows[0]) * f,
                     (hit_cols[-1] - hit_cols[0] + 1) * f, (hit_rows[-1] - hit_rows[0] + 1) * f)
        return intersection(window, box)

    def upsample(self, cells: np.ndarray, window: Window) -> np.ndarray:
        """``cells`` at full resolution over ``window``."""
        f = self.factor
        rows, cols = self.cells(window)
        pixels = np.repeat(np.repeat(cells[rows, cols], f, axis=0), f, axis=1)
        top, left = window.row_off - rows.start * f, window.col_off - cols.start * f
        return pixels[top:top + window.height, left:left + window.width]


def _clear_collar(dst, window: Window, grid: _CollarGrid,
                  collar: np.ndarray, near_collar: np.ndarray) -> int:
    """Make the collar pixels of ``window`` transparent, at full resolution; count them.

    Candidates are passable pixels in or next to collar cells; those
    connected to a collar cell through candidates are collar. A one-cell
    halo around the window keeps connections that cross its border; only
    the part of it near the collar is read.
    """
    region = grid.around(near_collar, _grown(window, grid.factor, dst.width, dst.height))
    if region is None or not intersect(window, region):
        return 0
    inner = intersection(window, region)
    valid = dst.read_masks(1, window=region) > 0
    passable = _passable(dst.read(window=region), valid)
    labels, _ = ndimage.label(passable & grid.upsample(near_collar, region))
    seeds = np.unique(labels[passable & grid.upsample(collar, region)])
    in_collar = np.isin(labels, seeds[seeds > 0])
    rows = slice(inner.row_off - region.row_off, inner.row_off - region.row_off + inner.height)
    cols = slice(inner.col_off - region.col_off, inner.col_off - region.col_off + inner.width)
    cleared = in_collar[rows, cols] & valid[rows, cols]
    count = np.count_nonzero(cleared)
    if count:
        dst.write_mask(valid[rows, cols] & ~cleared, window=inner)
    return count


def _grown(window: Window, by: int, width: int, height: int) -> Window:
    col, row = max(0, window.col_off - by), max(0, window.row_off - by)
    return Window(col, row,
                  min(width, window.col_off + window.width + by) - col,
                  min(height, window.row_off + window.height + by) - row)


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
    factors = []
    factor = 2
    while factor <= MAX_OVERVIEW_FACTOR and -(-max(width, height) // (factor // 2)) > BLOCK_SIZE:
        factors.append(factor)
        factor *= 2
    return factors


def overview_file(path: str) -> str:
    """Where GDAL keeps the external overviews of ``path`` (and looks for them)."""
    return path + ".ovr"


def add_overviews(path: str) -> list[int]:
    """Compute averaged overviews of ``path`` into ``overview_file(path)``; return the factors.

    ``path`` itself is not modified. GDAL 3.10 cannot store overviews of an
    internal mask in an external .ovr (it logs a warning saying so):
    ``to_cog`` derives them from the full-resolution mask.
    """
    ovr = overview_file(path)
    if os.path.exists(ovr):
        os.remove(ovr)  # a re-run starts clean instead of updating stale levels
    with rasterio.open(path) as dataset:
        factors = overview_factors(dataset.width, dataset.height)
    if not factors:
        return []
    with rasterio.Env(TIFF_USE_OVR=True, GDAL_NUM_THREADS="ALL_CPUS",
                      GDAL_CACHEMAX=GDAL_CACHEMAX,
                      COMPRESS_OVERVIEW=INTERMEDIATE_OVERVIEW_CODEC,
                      # GDAL 3.10 averages band-interleaved overviews with the mask;
                      # pixel-interleaved ones blend transparent pixels into edges.
                      INTERLEAVE_OVERVIEW="BAND",
                      GDAL_TIFF_OVR_BLOCKSIZE=BLOCK_SIZE, BIGTIFF_OVERVIEW="IF_SAFER"):
        with rasterio.open(path, "r+") as dataset:
            dataset.build_overviews(factors, Resampling.average)
    return factors


# --- step 6: COG ----------------------------------------------------------


def _cog_options(band: str) -> dict:
    """GDAL COG driver options from rio-cogeo's profile for the band prefix."""
    profile = cog_profiles.get(COG_PROFILE[band])
    options = {
        "COMPRESS": profile["compress"],
        "BLOCKSIZE": profile["blockxsize"],
        # Reuse the data overviews of the .ovr; only the mask's are computed here.
        "OVERVIEWS": "AUTO",
        "OVERVIEW_RESAMPLING": "AVERAGE",
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
    }
    if profile["compress"].upper() == "JPEG":
        options["QUALITY"] = JPEG_QUALITY  # the COG driver writes 3-band JPEG as YCbCr
    else:
        options["PREDICTOR"] = "YES"
    return options


def to_cog(src: str, dst: str, band: str, key: str | None = None) -> dict:
    """Write the COG of a compressed file (and its ``.ovr``) to ``dst`` and validate it.

    GDAL's COG driver is used rather than GTiff with COPY_SRC_OVERVIEWS: with
    an external .ovr the latter writes mask overviews that are all opaque, so
    zoomed-out views would show the collar black.
    """
    # ls4's GDAL environment sets GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR for
    # S3, which would also hide the local .ovr beside ``src``.
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE", GDAL_NUM_THREADS="ALL_CPUS",
                      GDAL_CACHEMAX=GDAL_CACHEMAX):
        rasterio.shutil.copy(src, dst, driver="COG", **_cog_options(band))
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
