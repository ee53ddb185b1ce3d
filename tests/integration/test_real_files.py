"""The whole path on real GeoTIFFs from other projects (../shared/data/geotiff).

Each file is uploaded into a collection of its band prefix, processed by the
collection DAG, and read back through the WMS: the GetMap pixels must match
the source resampled to the same box. Every odd file of the corpus (corrupt,
truncated, not georeferenced, GCP-only, world file only, 16-bit, float, RGBA
with an impossible nodata...), a zero-byte upload and a text file named
``.tif`` go into the same collections, beside the good files, in the same runs.
"""

from __future__ import annotations

import os

import pytest
import rasterio
from rasterio.warp import transform_bounds

from include.synthetic import make_zero_byte
from ls4_ops.layout import parse_key
from ls4_ops.plan import NOT_PROCESSED
from tests.integration import pipeline, wms
from tests.unit.test_raster import EXPECTED_BAD, band_prefix_for

DATA = os.path.join(os.path.dirname(pipeline.ROOT), "shared", "data", "geotiff")
NC = "nc/realdata/usgs_2014/frames/georef/"
BW = "bw/realdata/usgs_1995/frames/georef/"
FILES = {
    # Landsat RGB in UTM 18N with nodata 0
    f"{NC}landsat_rgb.tif": "landsat_rgb/RGB.byte.tif",
    # 15 cm aerial RGB in UTM 13N with an internal mask
    f"{NC}hro_colorado.tif": "aerial_rgb/hro_colorado/201404_13SED190110_201404_0x1500m_CL_1_mask.tif",
    # aerial RGB in geographic coordinates (EPSG:4326)
    f"{NC}image_2000px.tif": "aerial_rgb/image_2000px.tif",
    # SPOT panchromatic in NAD27 Illinois East state plane, US survey feet
    f"{BW}sp27gtif.TIF": "grayscale/SP27GTIF.TIF",
    # B&W with a rotated black collar, NAD83 Georgia East without an EPSG code
    f"{BW}erdas_spnad83.tif": "grayscale/erdas_spnad83.tif",
}


def odd_key(relative: str) -> str:
    """Where the odd corpus file ``relative`` is uploaded: its band prefix's collection."""
    prefix = BW if band_prefix_for(os.path.join(DATA, relative)) == "bw" else NC
    return prefix + relative.replace("/", "_")


ODD = {odd_key(relative): (relative, phrase) for relative, phrase in EXPECTED_BAD.items()}
FIXES = ("upload", "export", "drop", "convert", "expand", "georeference")
EMPTY, NOT_A_TIFF = f"{NC}empty.tif", f"{BW}notes.tif"

pytestmark = [
    pytest.mark.skipif(not os.path.isdir(DATA), reason="../shared/data/geotiff is absent"),
    pytest.mark.usefixtures("airflow_db"),
]


@pytest.fixture(scope="module")
def processed(services, tmp_path_factory):
    for key, relative in FILES.items():
        pipeline.upload(os.path.join(DATA, relative), key)
    for key, (relative, _) in ODD.items():
        pipeline.upload(os.path.join(DATA, relative), key)
    folder = tmp_path_factory.mktemp("odd")
    make_zero_byte(str(folder / "empty.tif"))
    (folder / "notes.tif").write_text("scanned at 1200 dpi, see the flight log\n")
    pipeline.upload(str(folder / "empty.tif"), EMPTY)
    pipeline.upload(str(folder / "notes.tif"), NOT_A_TIFF)
    collections = pipeline.discover()
    names = ("realdata_usgs_2014_frames", "realdata_usgs_1995_frames")
    runs = {name: pipeline.run_dag(collections[name].dag_id) for name in names}
    for run in runs.values():
        states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
        # The odd uploads fail their own frame only; the collection is indexed and
        # published, and the run is not green while they are left unprocessed.
        assert states[("tile_index", -1)] == states[("mapfile", -1)] == "success", states
        assert states[("report", -1)] == "failed" and run.state == "failed", states
    return collections


@pytest.mark.parametrize("key", sorted(FILES))
def test_real_file_is_served_by_the_wms_like_its_source(processed, key):
    source = os.path.join(DATA, FILES[key])
    collection = processed["realdata_usgs_2014_frames" if key.startswith(NC) else "realdata_usgs_1995_frames"]
    pipeline.wait_for_mapfile(collection)
    with rasterio.open(source) as src:
        minx, miny, maxx, maxy = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
        bands = min(src.count, 3)
    # The middle of the frame, where neighbours in the collection do not overlap it.
    dx, dy = (maxx - minx) * 0.25, (maxy - miny) * 0.25
    bbox = (minx + dx, miny + dy, maxx - dx, maxy - dy)
    rendered = wms.get_map(os.environ["LS4_WMS_URL"], collection, bbox, size=128)
    expected, valid = wms.source_in_box(source, bbox, size=128, bands=bands)
    difference = wms.mean_abs_difference(rendered, expected, valid)
    # Same colours, give or take two resamplings of sharp imagery (reprojection,
    # then MapServer's): up to ~7 grey levels on the 40 ft urban B&W scan.
    assert difference < 8.0
    # And in the right place: a one-pixel shift matches far worse.
    assert difference < 0.75 * wms.shifted_difference(rendered, expected, valid)


def test_unparsed_names_are_processed_and_reported(processed):
    reported = {n["key"] for n in pipeline.notifications() if n["subject"] == "file name not understood"}
    assert reported == set(FILES)


def test_each_odd_upload_is_refused_once_naming_the_file_the_problem_and_the_fix(processed):
    refused = {}
    for notice in pipeline.notifications():
        # Told by the frame's task, or by the plan before any raster work (the empty file).
        # Only this module's collections: the notice file is the whole session's.
        if notice["subject"] in ("upload cannot be processed", NOT_PROCESSED) and notice["key"].startswith((NC, BW)):
            refused.setdefault(notice["key"], []).append(notice)
    expected = {key: phrase for key, (_, phrase) in ODD.items()} | {
        EMPTY: "empty (0 bytes)", NOT_A_TIFF: "cannot be opened as a GeoTIFF"}
    assert set(refused) == set(expected)
    for key, phrase in expected.items():
        [notice] = refused[key]
        assert phrase in notice["reason"] and key in notice["text"], notice
        # What to do about it: every reason says what to do with the file.
        assert any(f"{verb} it" in notice["reason"] for verb in FIXES), notice


def test_odd_uploads_are_left_as_they_were_and_get_no_cog(processed):
    client = pipeline.s3()
    for key, (relative, _) in ODD.items():
        with open(os.path.join(DATA, relative), "rb") as source:
            assert client.get_object(Bucket=pipeline.bucket(), Key=key)["Body"].read() == source.read(), key
    for key in (*ODD, EMPTY, NOT_A_TIFF):
        listing = client.list_objects_v2(Bucket=pipeline.bucket(), Prefix=parse_key(key).cog_key)
        assert listing["KeyCount"] == 0, key
