"""The black collar of a scanned frame: found while the frame is written, then made transparent.

Pixels at most ``MAX_VALUE`` on every band, connected to the image edge
through such pixels (or through transparent ones), are the collar.

``ScanCollar`` works in two passes over a raster written block by block.
The first records, per cell of f x f pixels, whether every pixel is dark or
transparent and whether any pixel is dark but opaque; the collar is found on
that grid. The second re-reads only the blocks near the collar and rewrites
their mask at full resolution.
"""

from __future__ import annotations

import numpy as np
from rasterio.io import DatasetWriter
from rasterio.windows import Window, crop, intersect, intersection

MAX_VALUE = 8
# The collar is found on a grid of cells of f x f pixels (f a power of two),
# with at most this many cells on the long side.
GRID_MAX_CELLS = 2048


def ceil_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded up, in integers."""
    return -(-numerator // denominator)


def _brightest(pixels: np.ndarray) -> np.ndarray:
    """Per pixel, its brightest band: a pixel is dark when even that is dark."""
    return pixels.max(axis=0)


def _passable(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels the collar may cross: dark on every band, or transparent."""
    return (_brightest(pixels) <= MAX_VALUE) | ~valid


def _cell_size(long_side: int, block_size: int) -> int:
    """The smallest power of two, up to ``block_size``, that fits the long side in the grid."""
    factor = 1
    while ceil_div(long_side, factor) > GRID_MAX_CELLS and factor < block_size:
        factor *= 2
    return factor


def _within(window: Window, outer: Window) -> tuple[slice, slice]:
    """Array slices of ``window`` in an array that holds ``outer``."""
    return Window(window.col_off - outer.col_off, window.row_off - outer.row_off,
                  window.width, window.height).toslices()


def _grown_by_one(cells: np.ndarray) -> np.ndarray:
    """``cells`` and their 8 neighbours: a 3 x 3 binary dilation, in four shifted ORs
    (scipy's binary_dilation takes ~0.09 s on a 2048-cell grid; this ~0.01 s)."""
    rows = cells.copy()
    rows[1:] |= cells[:-1]
    rows[:-1] |= cells[1:]
    grown = rows.copy()
    grown[:, 1:] |= rows[:, :-1]
    grown[:, :-1] |= rows[:, 1:]
    return grown


class ScanCollar:
    """The scan collar of ``dataset``: ``record`` each block as it is written, then ``clear``.

    A cell is f x f pixels, f a power of two dividing the block size, so
    blocks hold whole cells. ``passable`` cells are dark or transparent in
    every pixel; edge-connected passable cells are the collar.
    ``dark_opaque`` cells hold a dark pixel still opaque: only blocks with one
    near the collar have pixels to clear.
    """

    def __init__(self, dataset: DatasetWriter):
        self.dataset = dataset
        self.factor = _cell_size(max(dataset.width, dataset.height), min(dataset.block_shapes[0]))
        shape = (ceil_div(dataset.height, self.factor), ceil_div(dataset.width, self.factor))
        self.passable = np.zeros(shape, bool)
        self.dark_opaque = np.zeros(shape, bool)

    def record(self, window: Window, pixels: np.ndarray, valid: np.ndarray) -> None:
        """First pass: note the cells of a block just written."""
        brightest = _brightest(pixels)
        if brightest.min() > MAX_VALUE and valid.all():
            return  # no dark or transparent pixel: the cells stay neither passable nor dark
        cells = self._cells(window)
        # A cell is passable when its brightest valid pixel is dark (transparent
        # ones count as 0), and dark-opaque when its darkest valid pixel is.
        self.passable[cells] = self._reduce(np.where(valid, brightest, 0), np.maximum) <= MAX_VALUE
        self.dark_opaque[cells] = self._reduce(np.where(valid, brightest, 255), np.minimum) <= MAX_VALUE

    def clear(self) -> int:
        """Second pass: make the collar pixels transparent; return how many there were."""
        collar, near_collar = self._collar_cells()
        return sum(self._clear_block(window, collar, near_collar)
                   for _, window in self.dataset.block_windows(1)
                   if self._may_hold_collar(window, near_collar))

    def _cells(self, window: Window) -> tuple[slice, slice]:
        """The cells ``window`` touches, as slices of the grid."""
        f = self.factor
        return (slice(window.row_off // f, ceil_div(window.row_off + window.height, f)),
                slice(window.col_off // f, ceil_div(window.col_off + window.width, f)))

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

    def _collar_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Collar cells, and those within one cell of them (where the collar's edge lies)."""
        from scipy import ndimage  # 0.4 s to import: only the compress task needs it

        labels, _ = ndimage.label(self.passable)
        edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        collar = np.isin(labels, np.unique(edge[edge > 0]))
        return collar, _grown_by_one(collar)

    def _may_hold_collar(self, window: Window, near_collar: np.ndarray) -> bool:
        cells = self._cells(window)
        return bool((near_collar[cells] & self.dark_opaque[cells]).any())

    def _clear_block(self, window: Window, collar: np.ndarray, near_collar: np.ndarray) -> int:
        """Make the collar pixels of ``window`` transparent, at full resolution; count them.

        Candidates are passable pixels in or next to collar cells; those
        connected to a collar cell through candidates are collar. A one-cell
        halo around the window keeps connections that cross its border; only
        the part of it near the collar is read.
        """
        from scipy import ndimage

        region = self._around(near_collar, self._grown(window))
        if region is None or not intersect(window, region):
            return 0
        inner = intersection(window, region)
        valid = self.dataset.read_masks(1, window=region) > 0
        passable = _passable(self.dataset.read(window=region), valid)
        labels, _ = ndimage.label(passable & self._upsample(near_collar, region))
        seeds = np.unique(labels[passable & self._upsample(collar, region)])
        in_collar = np.isin(labels, seeds[seeds > 0])
        inside = _within(inner, region)
        cleared = in_collar[inside] & valid[inside]
        count = np.count_nonzero(cleared)
        if count:
            self.dataset.write_mask(valid[inside] & ~cleared, window=inner)
        return count

    def _grown(self, window: Window) -> Window:
        """``window`` and a one-cell halo around it, inside the dataset."""
        f = self.factor
        halo = Window(window.col_off - f, window.row_off - f,
                      window.width + 2 * f, window.height + 2 * f)
        return crop(halo, self.dataset.height, self.dataset.width)

    def _around(self, cells: np.ndarray, window: Window) -> Window | None:
        """The part of ``window`` covered by the bounding box of ``cells`` (None if none)."""
        rows, cols = self._cells(window)
        inside = cells[rows, cols]
        hit_rows, hit_cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if not hit_rows.size:
            return None
        f = self.factor
        box = Window((cols.start + hit_cols[0]) * f, (rows.start + hit_rows[0]) * f,
                     (hit_cols[-1] - hit_cols[0] + 1) * f, (hit_rows[-1] - hit_rows[0] + 1) * f)
        return intersection(window, box)

    def _upsample(self, cells: np.ndarray, window: Window) -> np.ndarray:
        """``cells`` at full resolution over ``window``."""
        f = self.factor
        rows, cols = self._cells(window)
        pixels = np.repeat(np.repeat(cells[rows, cols], f, axis=0), f, axis=1)
        covered = Window(cols.start * f, rows.start * f, pixels.shape[1], pixels.shape[0])
        return pixels[_within(window, covered)]
