"""The whole path on real GeoTIFFs from other projects (../shared/data/geotiff).

Each file is uploaded into a collection of its band prefix, processed by the
collection DAG, and read back through the WMS: the GetMap pixels must match
the source resampled to the same box.
"""

from __future__ import annotations

import os

import pytest
import rasterio
from rasterio.warp import transform_bounds

from tests.integration import pipeline, wms

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

pytestmark = [
    pytest.mark.skipif(not os.path.isdir(DATA), reason="../shared/data/geotiff is absent"),
    pytest.mark.usefixtures("airflow_db"),
]


@pytest.fixture(scope="module")
def processed(services):
    for key, relative in FILES.items():
        pipeline.upload(os.path.join(DATA, relative), key)
    collections = pipeline.discover()
    names = ("realdata_usgs_2014_frames", "realdata_usgs_1995_frames")
    runs = {name: pipeline.run_dag(collections[name].dag_id).state for name in names}
    assert runs == {name: "success" for name in names}
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
