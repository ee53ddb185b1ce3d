"""The collection overview: one low-resolution mosaic of all of a collection's frames.

A zoomed-out GetMap of a collection would open every frame; with the
overview it opens one file. The mapfile shows the overview instead of the
frames once a screen pixel is coarser than an overview pixel.

The overview lies on a grid shared by all collections: that of web-map
tiles at zoom level ``MAX_ZOOM`` (9.55 m a pixel at the equator, 8.3 m in
Texas; a coarser level for a collection too wide for ``MAX_SIDE_PIXELS``),
from the projection's corner, in blocks of ``BLOCK`` pixels, so that every
version of a collection's overview, whatever its extent, lines up block for
block with the last. An update copies the blocks no change touched and draws again only
the blocks a change touched, from the frames' own overview levels (their
masks respected, in MapServer's drawing order): its reads of the frames are
in proportion to what changed. It is stored lossless, so that updates never
degrade what they copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window, from_bounds

from ls4_ops.layout import BANDS
from ls4_ops.profiles import PROFILES
from ls4_ops.tileindex import INDEX_CRS

WEB_MERCATOR_HALF_WIDTH = 20037508.342789244
# The finest grid: 9.55 m a pixel, a 16th of a 0.6 m frame pixel.
MAX_ZOOM = 14
# A collection spread wider (a mission over several counties, or a frame
# georeferenced far off) gets a coarser zoom level, so that its overview
# stays a file of at most this many pixels a side.
MAX_SIDE_PIXELS = 16384
BLOCK = PROFILES.block_size

Bounds = tuple[float, float, float, float]


def resolution(zoom: int) -> float:
    """Metres per pixel of a 256 px web-map tile at ``zoom``."""
    return 2 * WEB_MERCATOR_HALF_WIDTH / (256 * 2**zoom)


def zoom_for(bounds: Bounds) -> int:
    """The finest zoom level at which an overview of ``bounds`` stays within MAX_SIDE_PIXELS."""
    for zoom in range(MAX_ZOOM, -1, -1):
        mosaic = Mosaic.covering(bounds, zoom)
        if max(mosaic.width, mosaic.height) <= MAX_SIDE_PIXELS:
            return zoom
    return 0


@dataclass(frozen=True)
class Block:
    """A block of the global overview grid at ``zoom``: its column and row from the grid's corner."""

    zoom: int
    col: int
    row: int

    @property
    def bounds(self) -> Bounds:
        size = BLOCK * resolution(self.zoom)
        left = -WEB_MERCATOR_HALF_WIDTH + self.col * size
        top = WEB_MERCATOR_HALF_WIDTH - self.row * size
        return (left, top - size, left + size, top)


def blocks_covering(bounds: Bounds, zoom: int) -> set[Block]:
    """The blocks of the global grid at ``zoom`` that ``bounds`` touches."""
    size = BLOCK * resolution(zoom)
    minx, miny, maxx, maxy = bounds
    cols = range(math.floor((minx + WEB_MERCATOR_HALF_WIDTH) / size),
                 math.ceil((maxx + WEB_MERCATOR_HALF_WIDTH) / size))
    rows = range(math.floor((WEB_MERCATOR_HALF_WIDTH - maxy) / size),
                 math.ceil((WEB_MERCATOR_HALF_WIDTH - miny) / size))
    return {Block(zoom, col, row) for col in cols for row in rows}


@dataclass(frozen=True)
class Mosaic:
    """The extent of one overview: the blocks from ``first`` to ``last``, corners included."""

    first: Block
    last: Block

    @classmethod
    def covering(cls, bounds: Bounds, zoom: int) -> "Mosaic":
        blocks = blocks_covering(bounds, zoom)
        return cls(Block(zoom, min(b.col for b in blocks), min(b.row for b in blocks)),
                   Block(zoom, max(b.col for b in blocks), max(b.row for b in blocks)))

    @classmethod
    def of(cls, dataset) -> "Mosaic":
        """The mosaic an overview file covers."""
        zoom = round(math.log2(2 * WEB_MERCATOR_HALF_WIDTH / (256 * dataset.res[0])))
        shrink = resolution(zoom) / 2  # no block the file only touches at its edge
        left, bottom, right, top = dataset.bounds
        return cls.covering((left + shrink, bottom + shrink, right - shrink, top - shrink), zoom)

    @property
    def zoom(self) -> int:
        return self.first.zoom

    @property
    def width(self) -> int:
        return (self.last.col - self.first.col + 1) * BLOCK

    @property
    def height(self) -> int:
        return (self.last.row - self.first.row + 1) * BLOCK

    @property
    def transform(self):
        left, _, _, top = self.first.bounds
        return from_origin(left, top, resolution(self.zoom), resolution(self.zoom))

    def blocks(self) -> Iterator[Block]:
        for row in range(self.first.row, self.last.row + 1):
            for col in range(self.first.col, self.last.col + 1):
                yield Block(self.zoom, col, row)

    def window(self, block: Block) -> Window:
        return Window((block.col - self.first.col) * BLOCK, (block.row - self.first.row) * BLOCK, BLOCK, BLOCK)

    def holds(self, block: Block) -> bool:
        return (block.zoom == self.zoom and self.first.col <= block.col <= self.last.col
                and self.first.row <= block.row <= self.last.row)


# Opens the frames (COGs) whose footprint meets some bounds, in drawing order.
FrameSource = Callable[[Bounds], Iterable]


def update(previous: str | None, out: str, band: str, extent: Bounds, changed: Iterable[Bounds],
           frames: FrameSource, scratch: str) -> dict:
    """Write the overview of a collection whose footprints span ``extent`` to ``out`` (a COG).

    ``previous`` is the overview as it was (None: draw everything), and
    ``changed`` the areas changes touched since; ``frames`` gives the frames
    to draw in some bounds. ``scratch`` is a path for the working copy.
    Returns the overview's zoom level and resolution, and how many blocks
    were drawn and how many copied.
    """
    mosaic = Mosaic.covering(extent, zoom_for(extent))
    redraw = set().union(*(blocks_covering(bounds, mosaic.zoom) for bounds in changed))
    bands = BANDS[band]
    drawn = copied = 0
    with ExitStack() as stack:
        old = stack.enter_context(rasterio.open(previous)) if previous else None
        old_mosaic = Mosaic.of(old) if old else None
        work = stack.enter_context(rasterio.open(
            scratch, "w", driver="GTiff", width=mosaic.width, height=mosaic.height, count=bands, dtype="uint8",
            crs=INDEX_CRS, transform=mosaic.transform, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
            compress="DEFLATE", zlevel=1, sparse_ok=True, photometric="RGB" if bands == 3 else "MINISBLACK"))
        for block in mosaic.blocks():
            if old is not None and block not in redraw and old_mosaic.holds(block):
                pixels, valid = _copy(old, old_mosaic.window(block))
                copied += 1
            else:
                pixels, valid = _draw(block, frames(block.bounds), bands)
                drawn += 1
            if valid.any():  # empty blocks stay unwritten (sparse): transparent, and no bytes
                work.write(pixels, window=mosaic.window(block))
                work.write_mask(valid, window=mosaic.window(block))
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        rasterio.shutil.copy(scratch, out, driver="COG", **PROFILES.overview_cog)
    return {"zoom": mosaic.zoom, "resolution": resolution(mosaic.zoom), "blocks_drawn": drawn,
            "blocks_copied": copied, "width": mosaic.width, "height": mosaic.height}


def _copy(old, window: Window) -> tuple[np.ndarray, np.ndarray]:
    return old.read(window=window), old.read_masks(1, window=window) > 0


def _draw(block: Block, frames: Iterable, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """The frames over ``block``, each drawn over those before it where its mask shows it."""
    pixels = np.zeros((bands, BLOCK, BLOCK), "uint8")
    valid = np.zeros((BLOCK, BLOCK), bool)
    left, bottom, right, top = block.bounds
    res = resolution(block.zoom)
    for frame in frames:
        minx, miny, maxx, maxy = frame.bounds
        # The overview pixels of the block that lie wholly inside the frame (an
        # edge pixel it only partly covers is left to its neighbours).
        col0, col1 = max(0, math.ceil((minx - left) / res)), min(BLOCK, math.floor((maxx - left) / res))
        row0, row1 = max(0, math.ceil((top - maxy) / res)), min(BLOCK, math.floor((top - miny) / res))
        if col0 >= col1 or row0 >= row1:
            continue
        part = (left + col0 * res, top - row1 * res, left + col1 * res, top - row0 * res)
        window = from_bounds(*part, transform=frame.transform).intersection(
            Window(0, 0, frame.width, frame.height))  # rounding must not step outside
        shape = (row1 - row0, col1 - col0)
        # A read this much smaller than the window is served from the frame's own
        # overview levels (averaged with its mask when the COG was made).
        data = frame.read(list(range(1, bands + 1)), window=window, out_shape=(bands, *shape),
                          resampling=Resampling.average)
        shows = frame.read_masks(1, window=window, out_shape=shape, resampling=Resampling.nearest) > 0
        pixels[:, row0:row1, col0:col1][:, shows] = data[:, shows]
        valid[row0:row1, col0:col1] |= shows
    return pixels, valid
