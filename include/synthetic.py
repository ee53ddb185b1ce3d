"""Synthetic GeoTIFF uploads: the sample collections of `make run`, tests and benchmarks.

``make_frame`` writes a photo-like frame strip by strip, so a 20000 x 20000
frame costs a few tens of MB of RAM, not gigabytes. Every pixel is a pure
function of its row and column: any window of a frame can be recomputed
(``frame_pixels``) to check what a pipeline step did with it.

What a frame holds, for ``FrameLayout`` to point at:
- a smooth gradient with texture, never darker than 24 or brighter than 240;
- an interior black block (0 on every band) and an interior white block
  (255), both well inside the photo: a collar rule must keep them opaque;
- optionally a black collar of ``collar`` px on every side, like the film
  border of a scanned frame;
- optionally an alpha band, 255 except for a transparent hole.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, WindowError
from rasterio.transform import from_bounds
from rasterio.warp import transform as transform_points
from rasterio.windows import Window

from ls4_ops.layout import BANDS

# Somewhere in Austin, TX: the default place of a frame, in any CRS.
DEFAULT_CENTER_LONLAT = (-97.74, 30.27)
DEFAULT_PIXEL_METRES = 1.0
STRIP_ROWS = 256

# A transverse Mercator on a meridian no EPSG zone uses: a CRS without a code.
CUSTOM_TM_WKT = CRS.from_proj4(
    "+proj=tmerc +lat_0=30 +lon_0=-97.3 +k=0.9999 +x_0=200000 +y_0=100000 "
    "+ellps=GRS80 +units=m +no_defs"
).to_wkt()


Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class FrameLayout:
    """Where the notable pixels of a generated frame are (full-resolution windows)."""

    path: str
    width: int
    height: int
    collar: int
    black_block: Window
    white_block: Window
    alpha_hole: Window | None


def frame_layout(path: str, width: int, height: int, collar: int = 0,
                 alpha: bool = False) -> FrameLayout:
    side = max(8, min(width, height) // 12)
    return FrameLayout(
        path=path,
        width=width,
        height=height,
        collar=collar,
        black_block=Window(width // 2 - side // 2, height // 2 - side // 2, side, side),
        white_block=Window(width // 4, height // 4, side, side),
        alpha_hole=Window(width * 5 // 8, height // 4, side, side) if alpha else None,
    )


def frame_pixels(layout: FrameLayout, window: Window, image_bands: int) -> np.ndarray:
    """The uint8 image bands of ``window`` of a frame (shape: bands, rows, cols)."""
    rows = np.arange(window.row_off, window.row_off + window.height, dtype=np.float32)[:, None]
    cols = np.arange(window.col_off, window.col_off + window.width, dtype=np.float32)[None, :]
    gradient = 40 + 90 * cols / layout.width + 60 * rows / layout.height
    texture = 25 * np.cos(rows / 23) * np.sin(cols / 17)
    noise = ((cols.astype(np.uint32) * np.uint32(73856093))
             ^ (rows.astype(np.uint32) * np.uint32(19349663))) % 21
    base = gradient + texture + noise.astype(np.float32) - 10
    # Colours differ per band: sin((rows + cols) / 61), from 1-D factors.
    tint = 12 * (np.sin(rows / 61) * np.cos(cols / 61) + np.cos(rows / 61) * np.sin(cols / 61))
    pixels = np.stack([np.clip(base + band * tint, 24, 240) for band in range(image_bands)])
    pixels = pixels.astype(np.uint8)
    _paint(pixels, window, layout.black_block, 0)
    _paint(pixels, window, layout.white_block, 255)
    if layout.collar:
        outside = ((rows < layout.collar) | (rows >= layout.height - layout.collar)
                   | (cols < layout.collar) | (cols >= layout.width - layout.collar))
        pixels[:, outside] = 0
    return pixels


def alpha_pixels(layout: FrameLayout, window: Window) -> np.ndarray:
    alpha = np.full((int(window.height), int(window.width)), 255, np.uint8)
    if layout.alpha_hole is not None:
        _paint(alpha[None], window, layout.alpha_hole, 0)
    return alpha


def _paint(pixels: np.ndarray, window: Window, block: Window, value: int) -> None:
    try:
        overlap = window.intersection(block)
    except WindowError:  # they do not overlap
        return
    row, col = overlap.row_off - window.row_off, overlap.col_off - window.col_off
    pixels[:, row:row + overlap.height, col:col + overlap.width] = value


def default_bounds(crs: str | CRS, width: int, height: int,
                   pixel_metres: float = DEFAULT_PIXEL_METRES) -> Bounds:
    """Bounds of a frame around Austin in ``crs``, with pixels of about ``pixel_metres``."""
    lon, lat = DEFAULT_CENTER_LONLAT
    east_lon = lon + pixel_metres / (111_320 * np.cos(np.radians(lat)))
    xs, ys = transform_points("EPSG:4326", crs, [lon, east_lon], [lat, lat])
    pixel = abs(xs[1] - xs[0])
    x, y = xs[0], ys[0]
    return (x - pixel * width / 2, y - pixel * height / 2,
            x + pixel * width / 2, y + pixel * height / 2)


def make_frame(path: str, band: str = "nc", width: int = 1024, height: int = 768,
               crs: str | CRS = "EPSG:3857", bounds: Bounds | None = None,
               collar: int = 0, alpha: bool = False, dtype: str = "uint8",
               tiled: bool = False, nodata: float | None = None,
               compress: str | None = None, extra_bands: int = 0) -> FrameLayout:
    """Write a synthetic aerial frame; return where its notable pixels are.

    ``band`` picks 1 (bw) or 3 (nc) image bands; ``alpha`` appends an alpha
    band; ``extra_bands`` appends plain (non-alpha) bands, like NAIP's NIR.
    Non-uint8 dtypes hold the same picture scaled to 16 bits (or as floats).
    ``compress=None`` writes raw pixels, like most scanner exports.
    """
    layout = frame_layout(path, width, height, collar, alpha)
    image_bands = BANDS[band]
    count = image_bands + extra_bands + int(alpha)
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
        "crs": crs, "transform": from_bounds(*(bounds or default_bounds(crs, width, height)),
                                             width, height),
        "nodata": nodata, "photometric": "RGB" if image_bands == 3 else "MINISBLACK",
        "compress": compress, "num_threads": "ALL_CPUS",
    }
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    else:
        profile.update(blockysize=min(STRIP_ROWS, height))
    if compress and compress.lower() == "deflate":
        profile.update(zlevel=1)
    with rasterio.open(path, "w", **profile) as dst:
        if alpha:
            interp = list(dst.colorinterp)
            interp[-1] = ColorInterp.alpha
            dst.colorinterp = interp
        for row in range(0, height, STRIP_ROWS):
            window = Window(0, row, width, min(STRIP_ROWS, height - row))
            dst.write(_strip(layout, window, image_bands, extra_bands, alpha, dtype), window=window)
    return layout


def _strip(layout, window, image_bands, extra_bands, alpha, dtype) -> np.ndarray:
    pixels = frame_pixels(layout, window, image_bands)
    layers = [pixels] + [pixels[:1] // 2] * extra_bands
    if alpha:
        layers.append(alpha_pixels(layout, window)[None])
    data = np.concatenate(layers)
    if np.dtype(dtype) == np.uint8:
        return data
    if np.issubdtype(np.dtype(dtype), np.integer):
        return data.astype(dtype) * 257
    return data.astype(dtype) / 255.0


def make_not_georeferenced(path: str, width: int = 96, height: int = 64, band: str = "nc") -> None:
    """A plain TIFF: pixels, but no CRS, no geotransform, no GCPs."""
    pixels = frame_pixels(frame_layout(path, width, height), Window(0, 0, width, height),
                          BANDS[band])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height,
                           count=len(pixels), dtype="uint8") as dst:
            dst.write(pixels)


def make_gcp_only(path: str, width: int = 600, height: int = 400, band: str = "nc",
                  rotation_degrees: float = 7.0) -> list[GroundControlPoint]:
    """A TIFF georeferenced only by GCPs (EPSG:4326), slightly rotated like a scan.

    Returns the GCPs so a test can check where their pixels landed.
    """
    pixels = frame_pixels(frame_layout(path, width, height), Window(0, 0, width, height),
                          BANDS[band])
    west, south, east, north = default_bounds("EPSG:4326", width, height)
    angle = np.radians(rotation_degrees)
    cx, cy = (west + east) / 2, (south + north) / 2
    sx, sy = (east - west) / width, (north - south) / height
    gcps = []
    for row in (0, height / 2, height):
        for col in (0, width / 2, width):
            dx, dy = (col - width / 2) * sx, -(row - height / 2) * sy
            x = cx + dx * np.cos(angle) - dy * np.sin(angle)
            y = cy + dx * np.sin(angle) + dy * np.cos(angle)
            gcps.append(GroundControlPoint(row=row, col=col, x=x, y=y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height,
                           count=len(pixels), dtype="uint8",
                           gcps=gcps, crs="EPSG:4326") as dst:
            dst.write(pixels)
    return gcps


def make_zero_byte(path: str) -> None:
    open(path, "wb").close()


def make_truncated(path: str, width: int = 512, height: int = 512, keep: float = 0.5) -> None:
    """A valid frame cut to ``keep`` of its size: the header reads, the pixels do not."""
    make_frame(path, "nc", width, height)
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))
