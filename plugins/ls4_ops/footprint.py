"""The footprint of a COG for the tile index: the outline of its valid pixels.

Not its bounding box: a reprojected frame is a skewed quadrilateral inside
its box, and a scanned one has a transparent collar. The outline is traced
on a small overview level of the COG's internal mask (a few kB to fetch,
even over /vsis3/: no pixel and no full-resolution mask is read), then
simplified to a few tens of vertices that still cover every valid pixel.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.features import shapes
from shapely.geometry import MultiPolygon, Polygon, box, shape

# Over all parts and rings, closing points included: MapServer and PostGIS
# test footprints against every request, so tens of vertices, not thousands.
MAX_VERTICES = 64
# The mask is read at the smallest overview level whose long side is at
# least this many pixels (full resolution when the dataset is smaller): the
# outline is then exact to a read pixel, at most a 512th of the frame's side
# (a scan collar is a few percent of it). Tracing costs in proportion to the
# pixels read: 28 ms for a 2000 px frame, against 94 ms at 1024.
FOOTPRINT_MAX_PIXELS = 512
# Islands and holes smaller than this fraction of the valid area are dropped
# (holes filled): specks of nodata inside a photo, or bits of a ragged scan
# edge outside it, are not its outline and would use up the vertices.
MIN_PART_FRACTION = 0.005


def footprint(dataset) -> MultiPolygon:
    """The outline of the valid pixels of an open rasterio dataset, in its CRS.

    At most ``MAX_VERTICES`` vertices; it covers the valid pixels (but for
    dropped specks) and lies within the dataset's bounds. Raises ValueError
    when no pixel is valid: ls4 rejects such uploads, so it is a bug.
    """
    valid, transform = _read_mask(dataset)
    if not valid.any():
        raise ValueError(f"{dataset.name}: no valid pixel, so no footprint")
    regions = [shape(polygon) for polygon, _ in
               shapes(valid.astype(np.uint8), mask=valid, transform=transform)]
    area = _without_specks(shapely.union_all(regions))
    read_pixel = max(abs(transform.a), abs(transform.e))
    return MultiPolygon(_polygons(_simplest_outline(area, box(*dataset.bounds), read_pixel)))


def _read_factor(dataset) -> int:
    """How many full-resolution pixels one read pixel spans, per side."""
    most = max(1, max(dataset.width, dataset.height) // FOOTPRINT_MAX_PIXELS)
    overviews = dataset.overviews(1)
    if not overviews:  # not a COG: decimate the full-resolution mask instead
        return most
    return max([1] + [factor for factor in overviews if factor <= most])


def _read_mask(dataset) -> tuple[np.ndarray, Affine]:
    """The valid pixels on a decimated grid, and that grid's transform.

    A read at an overview's size is served by GDAL from that overview level,
    of the mask too (COG mask overviews mark a pixel valid when any pixel
    under it is): only that level's blocks are fetched.
    """
    factor = _read_factor(dataset)
    height, width = math.ceil(dataset.height / factor), math.ceil(dataset.width / factor)
    mask = dataset.dataset_mask(out_shape=(height, width), resampling=Resampling.nearest)
    transform = dataset.transform @ Affine.scale(dataset.width / width, dataset.height / height)
    return mask > 0, transform


def _without_specks(area) -> MultiPolygon:
    """``area`` without its tiny islands (the largest part always stays) and tiny holes."""
    smallest = MIN_PART_FRACTION * area.area
    parts = _polygons(area)
    largest = max(parts, key=lambda part: part.area)
    return MultiPolygon([
        Polygon(part.exterior, [hole for hole in part.interiors if Polygon(hole).area >= smallest])
        for part in parts if part is largest or part.area >= smallest
    ])


def _simplest_outline(area, bbox: Polygon, read_pixel: float):
    """The least simplified covering outline of ``area`` within ``bbox`` with few enough vertices.

    The tolerance starts at one read pixel and doubles. Beyond the size of
    the bbox (ever more parts, none simplifiable), the bbox is the outline.
    """
    tolerance = read_pixel
    while tolerance < bbox.length:
        outline = _covering_outline(area, tolerance).intersection(bbox)
        if shapely.get_num_coordinates(outline) <= MAX_VERTICES:
            return outline
        tolerance *= 2
    return bbox


def _covering_outline(area, tolerance: float):
    """``area`` simplified to ``tolerance``, then grown by it so it covers ``area`` again.

    A simplified boundary strays at most ``tolerance`` from the original;
    mitred corners stay single vertices (round ones would add a dozen each).
    """
    simplified = area.simplify(tolerance, preserve_topology=True)
    return simplified.buffer(tolerance, join_style="mitre")


def _polygons(geometry) -> list[Polygon]:
    """The polygons of a geometry: a clip also leaves lines and points where it only touches."""
    return [part for part in shapely.get_parts(geometry) if isinstance(part, Polygon)]
