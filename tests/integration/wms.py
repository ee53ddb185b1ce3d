"""Asking the WMS like a GIS client does, and comparing its pixels with the source."""

from __future__ import annotations

import urllib.parse
import urllib.request

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from rasterio.warp import reproject

from ls4_ops.layout import Collection
from ls4_ops.mapfile import index_layer_name, mapfile_url


def wms_get(url: str, **params) -> tuple[str, bytes]:
    query = urllib.parse.urlencode({"SERVICE": "WMS", "VERSION": "1.3.0", **params})
    with urllib.request.urlopen(f"{url}&{query}", timeout=60) as response:
        return response.headers.get("Content-Type", ""), response.read()


def get_map(wms_url: str, collection: Collection, bbox, size: int = 256) -> np.ndarray:
    """GetMap PNG as an (bands, rows, cols) array, RGBA."""
    content_type, body = wms_get(
        mapfile_url(collection, wms_url), REQUEST="GetMap", LAYERS=collection.name, STYLES="",
        CRS="EPSG:3857", BBOX=",".join(map(str, bbox)), WIDTH=size, HEIGHT=size, FORMAT="image/png",
        TRANSPARENT="TRUE")
    assert content_type.startswith("image/png"), body[:500]
    return png_pixels(body)


def png_pixels(body: bytes) -> np.ndarray:
    with rasterio.MemoryFile(body) as memory, memory.open() as png:
        return png.read()


def get_feature_info(wms_url: str, collection: Collection, bbox, x: int, y: int, size: int = 256) -> str:
    layer = index_layer_name(collection)
    content_type, body = wms_get(
        mapfile_url(collection, wms_url), REQUEST="GetFeatureInfo", LAYERS=layer, QUERY_LAYERS=layer,
        STYLES="", CRS="EPSG:3857", BBOX=",".join(map(str, bbox)), WIDTH=size, HEIGHT=size,
        FORMAT="image/png", INFO_FORMAT="text/plain", I=x, J=y, FEATURE_COUNT=5)
    assert content_type.startswith("text/plain"), body[:500]
    return body.decode()


def source_in_box(path: str, bbox, size: int = 256, bands: int = 3,
                  crs: str = "EPSG:3857") -> tuple[np.ndarray, np.ndarray]:
    """The source image resampled to the GetMap grid (``bbox`` in ``crs``, x/y order), and where it has data."""
    transform = from_bounds(*bbox, size, size)
    with rasterio.open(path) as src:
        indexes = list(range(1, bands + 1))
        expected = np.zeros((bands, size, size), dtype="float32")
        reproject(rasterio.band(src, indexes), expected, dst_transform=transform, dst_crs=crs,
                  resampling=Resampling.average, dst_nodata=0)
        valid = np.zeros((size, size), dtype="uint8")
        reproject(src.dataset_mask(), valid, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs=crs, resampling=Resampling.nearest)
    return expected, valid > 0


def mean_abs_difference(wms_rgba: np.ndarray, expected: np.ndarray, valid: np.ndarray) -> float:
    drawn = wms_rgba[-1] > 0 if wms_rgba.shape[0] in (2, 4) else np.ones(valid.shape, bool)
    both = drawn & valid
    assert both.mean() > 0.5, f"only {both.mean():.0%} of the box has pixels on both sides"
    bands = expected.shape[0]
    rendered = wms_rgba[:bands].astype("float32")
    return float(np.abs(rendered[:, both] - expected[:, both]).mean())


def shifted_difference(wms_rgba: np.ndarray, expected: np.ndarray, valid: np.ndarray) -> float:
    """The smallest mean difference with the WMS image moved by one pixel in any direction.

    An image in the right place matches much better unshifted than shifted.
    """
    drawn = wms_rgba[-1] > 0
    bands = expected.shape[0]
    rendered = wms_rgba[:bands].astype("float32")
    best = np.inf
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        moved = np.roll(rendered, (dy, dx), axis=(1, 2))
        both = np.roll(drawn, (dy, dx), axis=(0, 1)) & valid
        both[[0, -1], :] = both[:, [0, -1]] = False
        best = min(best, float(np.abs(moved[:, both] - expected[:, both]).mean()))
    return best
