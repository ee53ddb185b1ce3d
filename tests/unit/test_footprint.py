"""Footprints for the tile index: the outline of a COG's valid pixels, from a mask overview."""

from __future__ import annotations

import io
import itertools
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.errors import RasterioIOError
from rasterio.features import rasterize
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from shapely.geometry import MultiPolygon, Point, box

from include.synthetic import default_bounds, make_frame
from ls4_ops import footprint as footprint_module
from ls4_ops.footprint import MAX_VERTICES, footprint
from tests.unit.test_raster import CORPUS, CORPUS_FILES, EXPECTED_BAD, band_prefix_for, run_pipeline

pytestmark = [
    # A TIFF directory opened on its own (GTIFF_DIR:) is not georeferenced.
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
    # rasterio's own from_bounds() still multiplies Affines with `*`.
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

# The footprint is grown by the simplification tolerance (a read pixel or
# two) to cover every valid pixel, and read on a mask overview that marks a
# pixel valid when any pixel under it is: it is a little larger than the mask.
AREA_TOLERANCE = 0.03
# A pixel or two of growth is 4% of the area of the 50 x 50 px utmsmall quads.
REAL_FILE_AREA_TOLERANCE = 0.05
# Valid pixel centres a real file's footprint must hold: it may drop specks
# of a ragged scan edge (113 px on erdas_spnad83). Synthetic frames have
# none: their footprint must hold every valid pixel centre.
REAL_FILE_MIN_COVERED = 0.995


def make_cog(tmp_path: Path, band: str, width: int, height: int, crs: str, collar: int) -> str:
    src = str(tmp_path / "frame.tif")
    make_frame(src, band, width, height, crs=crs, bounds=default_bounds(crs, width, height),
               collar=collar)
    return run_pipeline(tmp_path, src, band)[-1]


def assert_traces_the_valid_pixels(dataset, outline, area_tolerance: float = AREA_TOLERANCE,
                                   min_covered: float = 1.0):
    """``outline`` is a footprint of ``dataset``: few vertices, in its bbox, its valid area."""
    assert isinstance(outline, MultiPolygon) and outline.is_valid
    assert shapely.get_num_coordinates(outline) <= MAX_VERTICES
    assert box(*dataset.bounds).covers(outline)
    valid = dataset.dataset_mask() > 0
    valid_area = np.count_nonzero(valid) * abs(dataset.res[0] * dataset.res[1])
    assert outline.area == pytest.approx(valid_area, rel=area_tolerance)
    # rasterize() burns the pixels whose centre is inside the outline.
    inside = rasterize([outline], out_shape=valid.shape, transform=dataset.transform) > 0
    assert np.count_nonzero(inside & valid) >= min_covered * np.count_nonzero(valid)


def centre_of_pixel(dataset, row: int, col: int) -> Point:
    return Point(dataset.transform @ (col + 0.5, row + 0.5))


@pytest.mark.parametrize("band, crs", [("nc", "EPSG:26914"), ("bw", "EPSG:3857")],
                         ids=["nc-reprojected-utm14", "bw-web-mercator"])
def test_footprint_of_a_collared_frame_is_its_valid_area_not_its_bbox(tmp_path, band, crs):
    cog = make_cog(tmp_path, band, 1500, 1000, crs, collar=30)
    with rasterio.open(cog) as dataset:
        outline = footprint(dataset)
        assert_traces_the_valid_pixels(dataset, outline)
        mask = dataset.dataset_mask()
        # In the collar, 5 px inside the bbox edge, mid-way along each side.
        middle_row, middle_col = dataset.height // 2, dataset.width // 2
        for row, col in ((middle_row, 5), (middle_row, dataset.width - 6),
                         (5, middle_col), (dataset.height - 6, middle_col)):
            assert mask[row, col] == 0
            assert not outline.contains(centre_of_pixel(dataset, row, col))
        assert outline.contains(centre_of_pixel(dataset, middle_row, middle_col))


@dataclass(frozen=True)
class Directory:
    """A TIFF directory (IFD) of a file: its size, kind, and where its tiles are."""

    width: int
    height: int
    is_mask: bool
    tiles: list[tuple[int, int]]  # (start, end) byte offsets in the file

    def read_in(self, read: np.ndarray) -> bool:
        return any(read[start:end].any() for start, end in self.tiles)


def tiff_directories(path: str) -> list[Directory]:
    directories = []
    for number in itertools.count(1):
        try:
            ifd = rasterio.open(f"GTIFF_DIR:{number}:{path}")
        except RasterioIOError:  # no such directory: that was the last one
            return directories
        with ifd:
            tiles = []
            block_rows, block_cols = ifd.block_shapes[0]
            for row in range(math.ceil(ifd.height / block_rows)):
                for col in range(math.ceil(ifd.width / block_cols)):
                    offset, size = (int(ifd.get_tag_item(f"BLOCK_{item}_{col}_{row}", "TIFF", 1))
                                    for item in ("OFFSET", "SIZE"))
                    tiles.append((offset, offset + size))
            # GDAL stores masks as 1-bit images.
            is_mask = ifd.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "1"
            directories.append(Directory(ifd.width, ifd.height, is_mask, tiles))


@contextmanager
def recording_reads(path: str):
    """``path`` opened through a file object that marks each byte GDAL reads in ``read``."""
    read = np.zeros(os.path.getsize(path), bool)

    class RecordingFile(io.RawIOBase):
        def __init__(self, name, mode="rb"):
            self.file = open(name, mode)

        def readable(self):
            return True

        def seekable(self):
            return True

        def seek(self, offset, whence=io.SEEK_SET):
            return self.file.seek(offset, whence)

        def tell(self):
            return self.file.tell()

        def readinto(self, buffer):
            start = self.file.tell()
            count = self.file.readinto(buffer)
            read[start:start + count] = True
            return count

        def close(self):
            self.file.close()
            super().close()

    with rasterio.open(path, opener=RecordingFile) as dataset:
        yield dataset, read


def directories_read_by_footprint(cog: str, directories: list[Directory]):
    """The TIFF directories whose tiles ``footprint`` reads: (width, height, kind)."""
    with recording_reads(cog) as (dataset, read):
        footprint(dataset)
    return [(d.width, d.height, "mask" if d.is_mask else "image")
            for d in directories if d.read_in(read)]


def test_footprint_of_a_large_frame_reads_one_small_mask_overview_and_no_pixel(tmp_path,
                                                                               monkeypatch):
    cog = make_cog(tmp_path, "bw", 6000, 4000, "EPSG:3857", collar=40)
    directories = tiff_directories(cog)
    assert sorted((d.width, d.is_mask) for d in directories) == [
        (size, is_mask) for size in (375, 750, 1500, 3000, 6000) for is_mask in (False, True)]
    with rasterio.open(cog) as dataset:
        assert_traces_the_valid_pixels(dataset, footprint(dataset))
    # The smallest level whose long side is at least FOOTPRINT_MAX_PIXELS (512).
    assert directories_read_by_footprint(cog, directories) == [(750, 500, "mask")]
    # The check can fail: with FOOTPRINT_MAX_PIXELS above the frame's size,
    # footprint reads the full-resolution mask, and the check sees it.
    monkeypatch.setattr(footprint_module, "FOOTPRINT_MAX_PIXELS", 6000)
    assert directories_read_by_footprint(cog, directories) == [(6000, 4000, "mask")]


REAL_FILES = [name for name in CORPUS_FILES if name not in EXPECTED_BAD]


@pytest.mark.skipif(not REAL_FILES, reason=f"{CORPUS} is absent")
@pytest.mark.parametrize("name", REAL_FILES or ["(absent)"])
def test_footprint_of_a_real_file_traces_its_valid_pixels(tmp_path, name):
    path = CORPUS / name
    cog = run_pipeline(tmp_path, str(path), band_prefix_for(path))[-1]
    with rasterio.open(cog) as dataset:
        assert_traces_the_valid_pixels(dataset, footprint(dataset), REAL_FILE_AREA_TOLERANCE,
                                       REAL_FILE_MIN_COVERED)


@contextmanager
def dataset_with_mask(mask: np.ndarray):
    """A grey in-memory GeoTIFF whose internal mask is ``mask`` (True: valid)."""
    height, width = mask.shape
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), MemoryFile() as memory:
        with memory.open(driver="GTiff", width=width, height=height, count=1, dtype="uint8",
                         crs="EPSG:3857", transform=from_origin(0, height, 1, 1)) as dst:
            dst.write(np.full((1, height, width), 128, np.uint8))
            dst.write_mask(mask)
        with memory.open() as dataset:
            yield dataset


def test_tiny_holes_and_islands_are_dropped_but_larger_parts_stay():
    mask = np.zeros((400, 400), bool)
    mask[10:210, 10:210] = True    # the photo: 40000 px
    mask[100:105, 100:105] = False  # a 25 px hole: dropped (filled)
    mask[50:90, 50:90] = False      # a 1600 px hole: stays
    mask[300:305, 300:305] = True   # a 25 px island: dropped
    mask[300:340, 10:50] = True     # a 1600 px island: stays
    with dataset_with_mask(mask) as dataset:
        outline = footprint(dataset)
    assert len(outline.geoms) == 2
    photo, island = sorted(outline.geoms, key=lambda part: -part.area)
    assert len(photo.interiors) == 1
    assert photo.interiors[0].envelope.contains(Point(70, 400 - 70))
    assert photo.contains(Point(102.5, 400 - 102.5))
    assert island.contains(Point(30, 400 - 320))
    assert not outline.contains(Point(302.5, 400 - 302.5))


def test_all_transparent_dataset_raises_value_error():
    with dataset_with_mask(np.zeros((64, 96), bool)) as dataset, \
            pytest.raises(ValueError, match="no valid pixel"):
        footprint(dataset)
