"""The collection overview: a mosaic of the frames' overview levels, updated block by block."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rio_cogeo.cogeo import cog_validate
from scipy import ndimage

from include.synthetic import make_frame
from ls4_ops import overview, raster

UTM = "EPSG:26914"
SIDE = 2400  # frame pixels of 1 m: 250 overview pixels at zoom 14


def make_cog(folder, name: str, x0: float, negative: bool = False) -> str:
    source, compressed, cog = (str(folder / f"{name}{suffix}.tif") for suffix in ("_src", "_c", ""))
    make_frame(source, "nc", SIDE, SIDE, crs=UTM, bounds=(x0, 3_349_000, x0 + SIDE, 3_349_000 + SIDE), collar=40)
    if negative:
        with rasterio.open(source, "r+") as frame:
            frame.write(255 - frame.read())
    raster.compress(source, compressed, "nc")
    raster.add_overviews(compressed)
    raster.to_cog(compressed, cog, "nc")
    return cog


class Frames:
    """The frames of a collection, in drawing order, as the overview task gives them."""

    def __init__(self, paths: list[str]):
        self.datasets = [rasterio.open(path) for path in paths]

    def __call__(self, bounds):
        minx, miny, maxx, maxy = bounds
        return [d for d in self.datasets
                if d.bounds.left < maxx and d.bounds.right > minx and d.bounds.bottom < maxy and d.bounds.top > miny]

    @property
    def extent(self):
        return (min(d.bounds.left for d in self.datasets), min(d.bounds.bottom for d in self.datasets),
                max(d.bounds.right for d in self.datasets), max(d.bounds.top for d in self.datasets))


@pytest.fixture(scope="module")
def cogs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    # Side by side with a 400 m overlap, the third far enough to start other blocks.
    return {"a": make_cog(folder, "a", 620_000), "b": make_cog(folder, "b", 622_000),
            "b_negative": make_cog(folder, "bn", 622_000, negative=True), "c": make_cog(folder, "c", 630_000)}


def build(tmp_path, frames: Frames, previous=None, changed=(), name="overview.tif"):
    out = str(tmp_path / name)
    info = overview.update(previous, out, "nc", frames.extent, changed, frames, str(tmp_path / f"work_{name}"))
    return out, info


def frame_on_overview_grid(path: str, overview_path: str, valid_if=Resampling.min) -> tuple[np.ndarray, np.ndarray]:
    """A frame resampled onto an overview's grid: its pixels, and where it is valid
    (``min``: all frame pixels under an overview pixel are; ``max``: any is)."""
    with rasterio.open(overview_path) as grid, rasterio.open(path) as frame:
        pixels = np.zeros((3, grid.height, grid.width), "float32")
        reproject(rasterio.band(frame, [1, 2, 3]), pixels, dst_transform=grid.transform, dst_crs=grid.crs,
                  resampling=Resampling.average)
        valid = np.zeros((grid.height, grid.width), "uint8")
        reproject(frame.dataset_mask(), valid, src_transform=frame.transform, src_crs=frame.crs,
                  dst_transform=grid.transform, dst_crs=grid.crs, resampling=valid_if)
    return pixels, valid > 0


def test_the_overview_is_the_frames_at_low_resolution_later_ones_on_top(cogs, tmp_path):
    path, info = build(tmp_path, Frames([cogs["a"], cogs["b"]]))
    assert info["zoom"] == overview.MAX_ZOOM and info["blocks_copied"] == 0
    assert cog_validate(path, quiet=True)[0]
    with rasterio.open(path) as result:
        pixels, shown = result.read().astype("float32"), result.read_masks(1) > 0
        assert result.res[0] == pytest.approx(overview.resolution(overview.MAX_ZOOM))
    a, a_valid = frame_on_overview_grid(cogs["a"], path)
    b, b_valid = frame_on_overview_grid(cogs["b"], path)
    only_a, on_b = a_valid & ~b_valid & shown, b_valid & shown
    assert only_a.sum() > 10_000 and on_b.sum() > 10_000
    assert np.abs(pixels[:, only_a] - a[:, only_a]).mean() < 3
    assert np.abs(pixels[:, on_b] - b[:, on_b]).mean() < 3  # b over a where they overlap
    # No collar and nothing outside the frames is shown, but for the pixel at their edge
    # (the frames' mask overviews show a pixel where any pixel under it is valid);
    # inside them, all is.
    _, a_touches = frame_on_overview_grid(cogs["a"], path, Resampling.max)
    _, b_touches = frame_on_overview_grid(cogs["b"], path, Resampling.max)
    assert not (shown & ~ndimage.binary_dilation(a_touches | b_touches)).any()
    assert shown.sum() > 0.97 * (a_valid | b_valid).sum()


def test_an_update_draws_only_the_blocks_a_change_touched(cogs, tmp_path):
    first, _ = build(tmp_path, Frames([cogs["a"], cogs["b"], cogs["c"]]), name="first.tif")
    replaced = Frames([cogs["a"], cogs["b_negative"], cogs["c"]])
    with rasterio.open(cogs["b"]) as old_b:
        changed = [tuple(old_b.bounds)]
    second, info = build(tmp_path, replaced, previous=first, changed=changed, name="second.tif")
    assert info["blocks_copied"] > 0 and info["blocks_drawn"] > 0
    fresh, _ = build(tmp_path, replaced, name="fresh.tif")
    with rasterio.open(second) as updated, rasterio.open(fresh) as rebuilt:
        # The same as drawing everything again, to the byte.
        assert (updated.read() == rebuilt.read()).all()
        assert (updated.read_masks(1) == rebuilt.read_masks(1)).all()


def test_an_overview_grows_with_its_collection_and_keeps_what_it_had(cogs, tmp_path):
    first, _ = build(tmp_path, Frames([cogs["a"]]), name="first.tif")
    grown = Frames([cogs["a"], cogs["c"]])
    with rasterio.open(cogs["c"]) as c:
        second, info = build(tmp_path, grown, previous=first, changed=[tuple(c.bounds)], name="second.tif")
    assert info["blocks_copied"] >= 1
    fresh, _ = build(tmp_path, grown, name="fresh.tif")
    with rasterio.open(second) as updated, rasterio.open(fresh) as rebuilt, rasterio.open(first) as old:
        assert updated.bounds == rebuilt.bounds and updated.width > old.width
        assert (updated.read() == rebuilt.read()).all()


def test_a_collection_spread_wide_gets_a_coarser_grid_of_bounded_size():
    # Frames in Austin and in El Paso: 850 km apart.
    wide = (-10_880_000.0, 3_540_000.0, -10_030_000.0, 3_560_000.0)
    zoom = overview.zoom_for(wide)
    assert zoom < overview.MAX_ZOOM
    mosaic = overview.Mosaic.covering(wide, zoom)
    assert max(mosaic.width, mosaic.height) <= overview.MAX_SIDE_PIXELS
    assert overview.Mosaic.covering(wide, zoom + 1).width > overview.MAX_SIDE_PIXELS  # the finest that fits
