"""Raster core (SPEC steps 3-6): compress, overviews, COG, and bad uploads."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given
from hypothesis import strategies as st
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile
from rasterio.transform import from_gcps
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate
from scipy import ndimage

from ls4_ops import collar, raster, turbo_gdal
from ls4_ops.profiles import PROFILES
from ls4_ops.errors import BadUpload
from include.synthetic import (
    CUSTOM_TM_WKT,
    default_bounds,
    frame_layout,
    frame_pixels,
    make_frame,
    make_gcp_only,
    make_not_georeferenced,
    make_truncated,
    make_zero_byte,
)

pytestmark = [
    # Opening an .ovr on its own, or a plain TIFF, is meant to be ungeoreferenced.
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
    # rasterio's own from_bounds() still multiplies Affines with `*`.
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "geotiff"


def run_pipeline(tmp_path: Path, src: str, band: str):
    compressed = str(tmp_path / "compressed.tif")
    cog = str(tmp_path / "cog.tif")
    info = raster.compress(src, compressed, band)
    factors = raster.add_overviews(compressed)
    return info, factors, raster.to_cog(compressed, cog, band), compressed, cog


def pixel_at(dataset, x: float, y: float) -> tuple[int, int]:
    row, col = dataset.index(x, y)
    return int(row), int(col)


def window_center(window: Window) -> tuple[float, float]:
    """(col, row) of the centre of a window, in pixel coordinates."""
    return window.col_off + window.width / 2, window.row_off + window.height / 2


def center_in_3857(source_path: str, window: Window) -> tuple[float, float]:
    with rasterio.open(source_path) as src:
        col, row = window_center(window)
        x, y = src.transform @ (col, row)
        (x,), (y,) = transform_points(src.crs, "EPSG:3857", [x], [y])
    return x, y


# --- compress: grid and reprojection ----------------------------------------


def test_web_mercator_upload_keeps_its_exact_grid_and_pixels(tmp_path):
    src = str(tmp_path / "frame.tif")
    make_frame(src, "nc", 1100, 700)
    info = raster.compress(src, str(tmp_path / "out.tif"), "nc")
    with rasterio.open(src) as before, rasterio.open(tmp_path / "out.tif") as after:
        assert info["reprojected"] is False
        assert info["src_crs"] == "EPSG:3857"
        assert after.transform == before.transform
        assert tuple(after.bounds) == tuple(before.bounds) == info["bounds"]
        assert (after.width, after.height) == (before.width, before.height)
        assert np.array_equal(after.read(), before.read())
        assert (after.dataset_mask() == 255).all()


@pytest.mark.parametrize("crs, expected_name", [
    ("EPSG:26914", "EPSG:26914"),
    ("EPSG:4326", "EPSG:4326"),
    (CUSTOM_TM_WKT, CUSTOM_TM_WKT),
], ids=["utm14", "wgs84", "wkt-without-code"])
def test_other_crs_is_warped_to_web_mercator_and_overlays(tmp_path, crs, expected_name):
    src = str(tmp_path / "frame.tif")
    layout = make_frame(src, "nc", 900, 600, crs=crs, bounds=default_bounds(crs, 900, 600))
    info = raster.compress(src, str(tmp_path / "out.tif"), "nc")

    assert info["reprojected"] is True
    assert info["src_crs"].startswith("EPSG:") == expected_name.startswith("EPSG:")
    with rasterio.open(src) as before, rasterio.open(tmp_path / "out.tif") as after:
        assert after.crs.to_epsg() == 3857
        if expected_name.startswith("EPSG:"):
            assert info["src_crs"] == expected_name
        expected = transform_bounds(before.crs, "EPSG:3857", *before.bounds, densify_pts=21)
        half_pixel = after.res[0] / 2
        assert np.allclose(after.bounds, expected, atol=half_pixel)
        assert tuple(after.bounds) == info["bounds"]
        # Resolution stays close to the source's (about 1 m on the ground).
        assert 0.8 < after.res[0] / (1.0 / np.cos(np.radians(30.27))) < 1.25

        # The same ground point shows the same feature before and after.
        for block, value in ((layout.white_block, 255), (layout.black_block, 0)):
            row, col = pixel_at(after, *center_in_3857(src, block))
            assert (after.read(window=Window(col, row, 1, 1)) == value).all()
            assert after.dataset_mask(window=Window(col, row, 1, 1))[0, 0] == 255


def test_gcp_only_upload_is_warped_with_its_gcps(tmp_path):
    src = str(tmp_path / "gcps.tif")
    gcps = make_gcp_only(src, 600, 400, "bw")
    info = raster.compress(src, str(tmp_path / "out.tif"), "bw")
    assert info["reprojected"] is True
    assert info["src_crs"] == "EPSG:4326"
    # make_gcp_only places the white block like make_frame does.
    white = frame_layout(src, 600, 400).white_block
    col, row = window_center(white)
    lon, lat = from_gcps(gcps) @ (col, row)
    (x,), (y,) = transform_points("EPSG:4326", "EPSG:3857", [lon], [lat])
    with rasterio.open(tmp_path / "out.tif") as out:
        r, c = pixel_at(out, x, y)
        assert out.read(1, window=Window(c, r, 1, 1))[0, 0] == 255
        mask = out.dataset_mask()
        # Rotated by the GCPs: the corners of the output grid are outside the photo.
        assert mask[0, 0] == 0 and mask[-1, -1] == 0
        assert (mask == 255).mean() > 0.6


# --- compress: bands and transparency ---------------------------------------


@pytest.mark.parametrize("band, alpha, count", [
    ("bw", False, 1), ("bw", True, 1), ("nc", False, 3), ("nc", True, 3),
])
def test_output_keeps_the_image_bands_and_turns_alpha_into_the_mask(tmp_path, band, alpha, count):
    src = str(tmp_path / "frame.tif")
    layout = make_frame(src, band, 800, 600, alpha=alpha)
    info = raster.compress(src, str(tmp_path / "out.tif"), band)
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.count == info["count"] == count
        assert out.colorinterp == (RGB if count == 3 else (ColorInterp.gray,))
        assert out.nodata is None
        assert MaskFlags.per_dataset in out.mask_flag_enums[0]
        assert out.block_shapes[0] == (512, 512)
        assert out.compression is None  # uncompressed: what the COG writer reads fastest
        assert np.array_equal(out.read(), frame_pixels(layout, Window(0, 0, 800, 600), count))
        mask = out.dataset_mask()
    if alpha:
        hole = layout.alpha_hole.toslices()
        assert (mask[hole] == 0).all()
        assert info["mask"].startswith("alpha band")
        assert (mask == 0).sum() == layout.alpha_hole.width * layout.alpha_hole.height
    else:
        assert (mask == 255).all()


def test_scan_collar_is_transparent_but_dark_and_white_pixels_inside_stay(tmp_path):
    src = str(tmp_path / "frame.tif")
    layout = make_frame(src, "nc", 1500, 1000, collar=30)
    info = raster.compress(src, str(tmp_path / "out.tif"), "nc")
    with rasterio.open(tmp_path / "out.tif") as out:
        mask = out.dataset_mask()
        pixels = out.read()
    c = layout.collar
    ring = np.ones(mask.shape, bool)
    ring[c:-c, c:-c] = False
    assert (mask[ring] == 0).all()
    assert (mask[~ring] == 255).all()
    black, white = layout.black_block.toslices(), layout.white_block.toslices()
    assert (pixels[(slice(None), *black)] == 0).all()
    assert (pixels[(slice(None), *white)] == 255).all()
    assert info["mask"] == "scan collar"


def test_collar_is_what_dark_pixels_connect_to_the_edge(tmp_path):
    """One bright pixel between a dark block and the collar keeps the block.

    The frame is wider than the collar grid, so the collar is found on cells
    of 2x2 pixels and refined at full resolution.
    """
    src = str(tmp_path / "frame.tif")
    make_frame(src, "bw", 2100, 600, collar=20)
    apart, touching = Window(21, 100, 50, 50), Window(20, 300, 50, 50)
    with rasterio.open(src, "r+") as frame:
        for block in (apart, touching):
            frame.write(np.zeros((1, 50, 50), np.uint8), window=block)
    raster.compress(src, str(tmp_path / "out.tif"), "bw")
    with rasterio.open(tmp_path / "out.tif") as out:
        assert (out.dataset_mask(window=apart) == 255).all()
        assert (out.dataset_mask(window=Window(20, 100, 1, 50)) == 255).all()
        assert (out.dataset_mask(window=touching) == 0).all()
        assert (out.dataset_mask(window=Window(0, 100, 20, 50)) == 0).all()


def test_collar_of_a_rotated_warped_frame_is_transparent(tmp_path):
    src = str(tmp_path / "frame.tif")
    crs = "EPSG:26914"
    layout = make_frame(src, "nc", 1200, 900, crs=crs, bounds=default_bounds(crs, 1200, 900),
                        collar=25)
    info = raster.compress(src, str(tmp_path / "out.tif"), "nc")
    assert info["mask"] == "reprojection footprint + scan collar"
    with rasterio.open(tmp_path / "out.tif") as out:
        dark_opaque = (out.read() <= collar.MAX_VALUE).all(axis=0) & (out.dataset_mask() > 0)
        labels, count = ndimage.label(dark_opaque)
        # The one dark area left is the interior black block, where it should be.
        assert count == 1
        row, col = pixel_at(out, *center_in_3857(src, layout.black_block))
        assert labels[row, col] == 1
        side = layout.black_block.width
        assert 0.9 * side**2 < dark_opaque.sum() < 1.1 * side**2


def test_white_is_never_transparent(tmp_path):
    src = str(tmp_path / "frame.tif")
    layout = make_frame(src, "bw", 700, 700)
    with rasterio.open(src, "r+") as frame:  # a white border where a collar would be
        frame.write(np.full((1, 700, 20), 255, np.uint8), window=Window(0, 0, 20, 700))
    _, _, _, compressed, cog = run_pipeline(tmp_path, src, "bw")
    for path in (compressed, cog):
        with rasterio.open(path) as out:
            assert out.nodata is None
            mask = out.dataset_mask()
            assert (mask[layout.white_block.toslices()] == 255).all()
            assert (mask[:, :20] == 255).all()


def test_source_nodata_is_honoured_but_not_carried(tmp_path):
    src = str(tmp_path / "frame.tif")
    layout = make_frame(src, "nc", 800, 600, nodata=0)
    info = raster.compress(src, str(tmp_path / "out.tif"), "nc")
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.nodata is None
        assert (out.dataset_mask()[layout.black_block.toslices()] == 0).all()
    assert info["mask"].startswith("nodata 0")


def test_compress_reads_and_writes_window_by_window(tmp_path):
    src = str(tmp_path / "frame.tif")
    make_frame(src, "nc", 6000, 4000, collar=40)  # 72 MB of pixels
    tracemalloc.start()
    try:
        raster.compress(src, str(tmp_path / "out.tif"), "nc")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 25 * 2**20


# --- bad uploads ------------------------------------------------------------


def _uint16(path):
    make_frame(path, "nc", 300, 200, dtype="uint16")


def _float32(path):
    make_frame(path, "bw", 300, 200, dtype="float32")


def _text(path):
    Path(path).write_text("this is not a TIFF\n")


@pytest.mark.parametrize("make, band, reason", [
    (make_zero_byte, "nc", "empty (0 bytes)"),
    (make_truncated, "nc", "corrupt or truncated"),
    (_text, "nc", "cannot be opened as a GeoTIFF"),
    (make_not_georeferenced, "nc", "not georeferenced"),
    (_uint16, "nc", "pixels are uint16"),
    (_float32, "bw", "pixels are float32"),
    (lambda p: make_frame(p, "nc", 300, 200), "bw", "3 band(s) (red, green, blue)"),
    (lambda p: make_frame(p, "bw", 300, 200), "nc", "upload it under bw/"),
    (lambda p: make_frame(p, "nc", 300, 200, extra_bands=1), "nc", "band 4 is not marked as alpha"),
    (lambda p: make_frame(p, "nc", 300, 200, extra_bands=2), "nc", "5 band(s)"),
    (lambda p: make_frame(p, "bw", 300, 200, collar=150), "bw", "no pixel is left visible"),
], ids=["zero-byte", "truncated", "not-a-tiff", "not-georeferenced", "uint16", "float32",
        "rgb-as-bw", "gray-as-nc", "rgbn", "five-bands", "all-collar"])
def test_bad_upload_is_rejected_with_a_reason(tmp_path, make, band, reason):
    src = str(tmp_path / "upload.tif")
    make(src)
    with pytest.raises(BadUpload) as caught:
        raster.compress(src, str(tmp_path / "out.tif"), band, key="bw/x/y_1960/frames/georef/a.tif")
    assert reason in caught.value.reason
    assert caught.value.key == "bw/x/y_1960/frames/georef/a.tif"


def test_all_problems_of_an_upload_are_reported_at_once(tmp_path):
    src = str(tmp_path / "upload.tif")
    make_frame(src, "nc", 300, 200, dtype="uint16", extra_bands=2)
    with pytest.raises(BadUpload) as caught:
        raster.compress(src, str(tmp_path / "out.tif"), "bw")
    assert "uint16" in caught.value.reason and "5 band(s)" in caught.value.reason


def test_a_header_claiming_more_pixels_than_the_limit_is_refused_before_any_is_read(tmp_path):
    huge = str(tmp_path / "huge.tif")
    # What a damaged or hand-made header can claim: 10 gigapixels, in a file of a few hundred kB.
    with rasterio.open(huge, "w", driver="GTiff", width=100_000, height=100_000, count=3, dtype="uint8",
                       crs="EPSG:3857", transform=rasterio.transform.from_origin(0, 0, 1, 1), tiled=True,
                       blockxsize=1024, blockysize=1024, compress="deflate", sparse_ok=True):
        pass
    assert os.path.getsize(huge) < 2**20
    with pytest.raises(BadUpload, match=r"header claims 100,000 x 100,000 pixels \(10,000 Mpx\) in a file of "
                                        r"0\.\d MB, more than ls4 takes \(3,000 Mpx, LS4_MAX_PIXELS\)"):
        raster.compress(huge, str(tmp_path / "out.tif"), "nc")
    assert not os.path.exists(tmp_path / "out.tif")
    # The limit is the deployment's.
    small = str(tmp_path / "small.tif")
    make_frame(small, "nc", 300, 200)
    with pytest.raises(BadUpload, match=r"\(0 Mpx, LS4_MAX_PIXELS\)"):
        raster.compress(small, str(tmp_path / "out.tif"), "nc", max_pixels=50_000)


def test_compress_reads_gdal_paths_like_vsis3(tmp_path):
    src = str(tmp_path / "frame.tif")
    make_frame(src, "bw", 600, 400)
    with MemoryFile(Path(src).read_bytes()) as upload:
        assert upload.name.startswith("/vsimem/")
        info = raster.compress(upload.name, str(tmp_path / "out.tif"), "bw")
    assert (info["width"], info["height"], info["count"]) == (600, 400, 1)
    with MemoryFile(b"") as empty, pytest.raises(BadUpload, match="cannot be opened"):
        raster.compress(empty.name, str(tmp_path / "empty.tif"), "bw")


def test_missing_source_is_not_blamed_on_the_upload(tmp_path):
    with pytest.raises(RasterioIOError) as caught:
        raster.compress(str(tmp_path / "gone.tif"), str(tmp_path / "out.tif"), "nc")
    assert not isinstance(caught.value, BadUpload)


# --- overviews ----------------------------------------------------------------


@pytest.mark.parametrize("size, factors", [
    ((512, 512), []),
    ((513, 100), [2]),
    ((1024, 700), [2]),
    ((1500, 1000), [2, 4]),
    ((6000, 6000), [2, 4, 8, 16]),
    ((20000, 20000), [2, 4, 8, 16, 32, 64]),
    ((100, 90000), [2, 4, 8, 16, 32, 64]),
])
def test_overview_factors(size, factors):
    assert raster.overview_factors(*size) == factors


@given(st.integers(1, 200_000), st.integers(1, 200_000))
def test_overview_factors_stop_at_one_block_or_64(width, height):
    factors = raster.overview_factors(width, height)
    long_side = max(width, height)
    assert factors == [2 ** i for i in range(1, len(factors) + 1)]
    if long_side <= 512:
        assert factors == []
    else:
        smallest = collar.ceil_div(long_side, factors[-1])
        assert smallest <= 512 or factors[-1] == 64
        assert len(factors) == 1 or collar.ceil_div(long_side, factors[-2]) > 512


@given(st.integers(1, 40), st.integers(1, 40), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_collar_cells_grow_as_a_3x3_binary_dilation(rows, cols, density, seed):
    cells = np.random.default_rng(seed).random((rows, cols)) < density
    expected = ndimage.binary_dilation(cells, structure=np.ones((3, 3), bool))
    assert np.array_equal(collar._grown_by_one(cells), expected)


@given(st.integers(0, 10**12), st.integers(1, 10**6))
def test_ceil_div_rounds_up(numerator, denominator):
    quotient = collar.ceil_div(numerator, denominator)
    assert (quotient - 1) * denominator < numerator <= quotient * denominator


def test_add_overviews_writes_an_ovr_and_leaves_the_file_alone(tmp_path):
    src = str(tmp_path / "frame.tif")
    make_frame(src, "nc", 1500, 1000, collar=30)
    compressed = str(tmp_path / "out.tif")
    raster.compress(src, compressed, "nc")
    digest = hashlib.sha256(Path(compressed).read_bytes()).hexdigest()
    assert raster.add_overviews(compressed) == [2, 4]
    assert raster.add_overviews(compressed) == [2, 4]  # a re-run starts clean
    assert hashlib.sha256(Path(compressed).read_bytes()).hexdigest() == digest
    with rasterio.open(compressed + ".ovr") as ovr:  # levels 2 and 4 (2 from the first)
        assert (ovr.width, ovr.height) == (750, 500)
        assert ovr.overviews(1) == [2]
        codec = PROFILES.intermediate_overviews["COMPRESS_OVERVIEW"]
        assert (ovr.compression.name if ovr.compression else "NONE").lower() == codec.lower()


@pytest.mark.parametrize("band, width, height", [("nc", 1536, 1024), ("bw", 1001, 701)])
def test_overviews_are_gdals_masked_averages_bit_for_bit(tmp_path, band, width, height):
    # 1536 x 1024 halves exactly at every level (averaged in numpy), 1001 x 701
    # does not (left to GDAL): both must be what GDAL's masked averaging writes.
    src = str(tmp_path / "frame.tif")
    make_frame(src, band, width, height, collar=40)
    ours, gdals = str(tmp_path / "ours.tif"), str(tmp_path / "gdals.tif")
    raster.compress(src, ours, band)
    Path(gdals).write_bytes(Path(ours).read_bytes())
    factors = raster.add_overviews(ours)
    with rasterio.Env(**PROFILES.intermediate_overviews, TIFF_USE_OVR=True), rasterio.open(gdals, "r+") as dataset:
        dataset.build_overviews(factors, Resampling.average)
    with rasterio.open(ours) as dataset:
        valid = dataset.dataset_mask() > 0
        assert not valid.all()  # the collar is masked: the masked averaging is what is compared
    for level in range(len(factors)):
        # ls4's GDAL environment hides files beside a dataset (for S3): the .ovr too.
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE"), \
                rasterio.open(ours, overview_level=level) as mine, rasterio.open(gdals, overview_level=level) as theirs:
            assert np.array_equal(mine.read(), theirs.read()), f"level {level}"


def test_the_cog_is_written_with_libjpeg_turbo():
    assert turbo_gdal.jpeg_library() == "libjpeg-turbo"
    assert turbo_gdal.version() >= "3.12"


def test_pyogrio_still_imports_after_the_cog_writer_loaded_its_gdal():
    # One process may write a COG and then the tile index's shapefile (dag.test(),
    # a worker running both): pyogrio checks at import that its GDAL found its data.
    code = "from ls4_ops import turbo_gdal; turbo_gdal.version(); import pyogrio; print(pyogrio.__gdal_version_string__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(raster.__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == turbo_gdal.version()  # the very same GDAL


def test_the_cog_writers_failures_carry_gdals_message(tmp_path):
    with pytest.raises(turbo_gdal.TurboGdalError, match="cannot open .*missing.tif: .*No such file"):
        turbo_gdal.translate(str(tmp_path / "missing.tif"), str(tmp_path / "cog.tif"), "COG", {}, {})
    src = str(tmp_path / "frame.tif")
    make_frame(src, "bw", 300, 200)
    with pytest.raises(turbo_gdal.TurboGdalError, match="cannot write"):
        turbo_gdal.translate(src, str(tmp_path / "no-such-dir" / "cog.tif"), "COG", {}, {})


def test_small_image_gets_no_overviews(tmp_path):
    src = str(tmp_path / "frame.tif")
    make_frame(src, "bw", 500, 300)
    info, factors, cog, compressed, _ = run_pipeline(tmp_path, src, "bw")
    assert factors == [] and cog["overviews"] == []
    assert not os.path.exists(compressed + ".ovr")


# --- COG ------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


def test_nc_cog_is_ycbcr_jpeg_with_overviews_and_mask(tmp_path):
    src = str(tmp_path / "frame.tif")
    layout = make_frame(src, "nc", 1500, 1000, collar=30)
    info, factors, cog, _, cog_path = run_pipeline(tmp_path, src, "nc")
    assert factors == cog["overviews"] == [2, 4]
    assert cog["size"] == os.path.getsize(cog_path)
    assert cog["bounds"] == info["bounds"]
    is_valid, errors, _ = cog_validate(cog_path, quiet=True)
    assert is_valid, errors
    with rasterio.open(cog_path) as out:
        assert out.count == 3
        assert out.compression.name.lower() == "jpeg"
        assert out.photometric.name.lower() == "ycbcr"
        assert out.block_shapes[0] == (512, 512)
        assert out.nodata is None
        assert MaskFlags.per_dataset in out.mask_flag_enums[0]
        valid = out.dataset_mask() > 0
        original = frame_pixels(layout, Window(0, 0, 1500, 1000), 3)
        assert psnr(out.read()[:, valid], original[:, valid]) > 30
    # The mask has overviews too: the collar stays transparent zoomed out,
    # and the averages ignore it: no dark fringe along the photo's edge.
    with rasterio.open(cog_path, overview_level=1) as zoomed_out:
        mask = zoomed_out.dataset_mask()
        assert mask.shape == (250, 375)
        assert (mask[:, :5] == 0).all() and (mask[10:-10, 10:-10] == 255).all()
        first_opaque = int(np.argmax(mask[125] > 0))
        edge, inside = zoomed_out.read(1)[50:200, first_opaque:first_opaque + 2].mean(axis=0)
        assert edge > 0.8 * inside


def test_bw_cog_is_lossless_deflate(tmp_path):
    src = str(tmp_path / "frame.tif")
    layout = make_frame(src, "bw", 1300, 900)
    _, factors, cog, _, cog_path = run_pipeline(tmp_path, src, "bw")
    assert factors == cog["overviews"] == [2, 4]
    with rasterio.open(cog_path) as out:
        assert out.compression.name.lower() == "deflate"
        assert out.count == 1
        assert out.block_shapes[0] == (512, 512)
        assert np.array_equal(out.read(), frame_pixels(layout, Window(0, 0, 1300, 900), 1))


def test_cog_reuses_the_overviews_of_the_ovr(tmp_path):
    src = str(tmp_path / "frame.tif")
    make_frame(src, "bw", 1300, 900)
    compressed = str(tmp_path / "out.tif")
    raster.compress(src, compressed, "bw")
    raster.add_overviews(compressed)
    with rasterio.open(compressed + ".ovr", "r+") as ovr:  # mark the level-2 overview
        ovr.write(np.full((1, ovr.height, ovr.width), 77, np.uint8))
    raster.to_cog(compressed, str(tmp_path / "cog.tif"), "bw")
    with rasterio.open(tmp_path / "cog.tif", overview_level=0) as level:
        assert (level.read() == 77).all()


def test_validate_cog_blames_ls4_not_the_upload(tmp_path):
    striped = str(tmp_path / "striped.tif")
    make_frame(striped, "nc", 1100, 700)
    with pytest.raises(raster.CogValidationError, match="not tiled") as caught:
        raster.validate_cog(striped)
    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, BadUpload)


# --- real GeoTIFFs from other projects (shared/data/geotiff) ---------------------

# Files that must fail, and a phrase of their reason; every other file must
# become a valid COG.
EXPECTED_BAD = {
    "aerial_rgb/naip/m_4709963_se_14_1_20090818.tif": "band 4 is not marked as alpha",
    "aerial_rgb/naip/m_4709963_se_14_1_20200831.tif": "band 4 is not marked as alpha",
    "corrupt/byte_truncated.tif": "corrupt or truncated",
    "corrupt/corrupt.tif": "corrupt or truncated",
    "corrupt/corrupted_gtiff_tags.tif": "no coordinate reference system",
    "dtypes/DEM_BY23_2015_1000_0101.tif": "float32",
    "dtypes/RGBA.uint16.tif": "uint16",
    "gcps/cog_gcps.tif": "uint16",
    # A hillshade whose only valid pixels are 0, around a nodata=255 area.
    "grayscale/shade.tif": "no pixel is left visible",
    "not_georeferenced/CB07_TIFFv1-02.tif": "not georeferenced",
    "worldfile/toronto.tif": "no coordinate reference system",
}

CORPUS_FILES = sorted(
    str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.suffix.lower() == ".tif"
) if CORPUS.is_dir() else []


def band_prefix_for(path: Path) -> str:
    try:
        with rasterio.open(path) as dataset:
            return "bw" if dataset.count == 1 else "nc"
    except RasterioIOError:
        return "nc"


def test_corpus_lists_every_expected_failure():
    if not CORPUS_FILES:
        pytest.skip(f"{CORPUS} is absent")
    assert set(EXPECTED_BAD) <= set(CORPUS_FILES)


@pytest.mark.parametrize("name", CORPUS_FILES or ["(absent)"])
def test_corpus_file(tmp_path, name):
    if not CORPUS_FILES:
        pytest.skip(f"{CORPUS} is absent")
    path = CORPUS / name
    band = band_prefix_for(path)
    if name in EXPECTED_BAD:
        with pytest.raises(BadUpload, match=EXPECTED_BAD[name]):
            raster.compress(str(path), str(tmp_path / "out.tif"), band)
        return
    info, factors, cog, _, cog_path = run_pipeline(tmp_path, str(path), band)
    assert cog_validate(cog_path, quiet=True)[0]
    with rasterio.open(cog_path) as out:
        assert out.crs.to_epsg() == 3857
        assert out.count == raster.BANDS[band]
        assert out.overviews(1) == factors == raster.overview_factors(out.width, out.height)
        assert (out.dataset_mask() > 0).any()
        with rasterio.open(path) as src:
            if not src.gcps[0]:
                # Overlays its source: the same footprint, within half an output pixel.
                expected = transform_bounds(src.crs, "EPSG:3857", *src.bounds, densify_pts=101)
                assert np.allclose(out.bounds, expected, atol=out.res[0] / 2), (out.bounds, expected)
