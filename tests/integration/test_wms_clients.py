"""The WMS as GIS clients use it: OWSLib and GDAL's WMS driver, WMS 1.1.1 and 1.3.0, every CRS
the capabilities offer, GetFeatureInfo in text and GML."""

from __future__ import annotations

import os
import subprocess

import pytest
import rasterio
from owslib.wms import WebMapService
from rasterio.warp import transform_bounds

from ls4_ops.layout import parse_key
from ls4_ops.mapfile import WMS_SRS, index_layer_name, mapfile_url
from ls4_ops.tileindex import COLUMNS
from tests.integration import pipeline, wms

pytestmark = pytest.mark.usefixtures("airflow_db")

ROOT = "nc/clientville/tops_1981/frames/"
UTM = pipeline.UTM
FRAME = (700, 600)
ORIGIN = (640_000.0, 3_355_000.0)
COLLECTION = parse_key(f"{ROOT}georef/x.tif").collection
# Where WMS 1.3.0 puts latitude first (EPSG's axis order); projected CRSs keep x first.
LATITUDE_FIRST = {"EPSG:4326", "EPSG:4269"}


def frame_bounds(i: int):
    return pipeline.row_bounds(ORIGIN, FRAME, i)


def inner_bounds(i: int, crs: str):
    """A box inside frame ``i``, clear of its collar and neighbour, in ``crs`` (x/y order)."""
    minx, miny, maxx, maxy = frame_bounds(i)
    inset_x, inset_y = FRAME[0] * 0.25, FRAME[1] * 0.25
    return transform_bounds(UTM, crs, minx + inset_x, miny + inset_y, maxx - inset_x, maxy - inset_y)


@pytest.fixture(scope="module")
def sources(services, tmp_path_factory):
    made = pipeline.upload_row(tmp_path_factory.mktemp("clients"),
                               [f"{ROOT}georef/19810520_3-{i + 1}.tif" for i in range(2)], ORIGIN, FRAME)
    pipeline.process(COLLECTION)
    return made


def url() -> str:
    return mapfile_url(COLLECTION, os.environ["LS4_WMS_URL"])


def second_frame(sources) -> str:
    return sources[f"{ROOT}georef/19810520_3-2.tif"]


@pytest.mark.parametrize("crs", WMS_SRS.split())
@pytest.mark.parametrize("version", ["1.1.1", "1.3.0"])
def test_owslib_getmap_in_every_offered_crs_shows_the_source(sources, version, crs):
    service = WebMapService(url(), version=version)
    assert crs in service[COLLECTION.name].crsOptions
    bbox = inner_bounds(1, crs)
    # OWSLib sends a 1.3.0 BBOX in latitude-first order where EPSG says so (as QGIS does).
    answer = service.getmap(layers=[COLLECTION.name], styles=[""], srs=crs, bbox=bbox, size=(256, 256),
                            format="image/png", transparent=True)
    body = answer.read()
    assert answer.info()["Content-Type"].startswith("image/png"), body[:300]
    expected, valid = wms.source_in_box(second_frame(sources), bbox, crs=crs)
    assert wms.mean_abs_difference(wms.png_pixels(body), expected, valid) < 6.0


@pytest.mark.parametrize("version, crs", [("1.1.1", "EPSG:4326"), ("1.3.0", "EPSG:4326"), ("1.3.0", "EPSG:3857"),
                                          ("1.3.0", "EPSG:3083")])
def test_gdal_wms_driver_reads_the_source(sources, tmp_path, version, crs):
    bbox = inner_bounds(1, crs)
    minx, miny, maxx, maxy = bbox
    # GDAL's WMS driver takes the BBOX in the axis order of the request it is given.
    asked = (miny, minx, maxy, maxx) if version == "1.3.0" and crs in LATITUDE_FIRST else bbox
    crs_key = "SRS" if version == "1.1.1" else "CRS"
    request = (f"WMS:{url()}&SERVICE=WMS&VERSION={version}&REQUEST=GetMap&LAYERS={COLLECTION.name}"
               f"&{crs_key}={crs}&BBOX={','.join(map(str, asked))}&FORMAT=image/png&TRANSPARENT=TRUE")
    out = str(tmp_path / "wms.tif")
    subprocess.run(["gdal_translate", "-q", "-outsize", "256", "256", request, out], check=True)
    with rasterio.open(out) as read:
        pixels = read.read()
        assert read.bounds == pytest.approx(bbox, rel=1e-6, abs=1e-6)
    expected, valid = wms.source_in_box(second_frame(sources), bbox, crs=crs)
    assert wms.mean_abs_difference(pixels, expected, valid) < 6.0


@pytest.mark.parametrize("info_format", ["text/plain", "application/vnd.ogc.gml"])
def test_getfeatureinfo_answers_every_index_attribute(sources, info_format):
    layer = index_layer_name(COLLECTION)
    bbox = transform_bounds(UTM, "EPSG:3857", *frame_bounds(1))
    content_type, body = wms.wms_get(
        url(), REQUEST="GetFeatureInfo", LAYERS=layer, QUERY_LAYERS=layer, STYLES="", CRS="EPSG:3857",
        BBOX=",".join(map(str, bbox)), WIDTH=256, HEIGHT=256, FORMAT="image/png", INFO_FORMAT=info_format,
        I=128, J=128, FEATURE_COUNT=5)
    assert content_type.startswith(info_format), body[:300]
    text = body.decode()
    for column in COLUMNS:
        assert column in text, column
    assert "19810520" in text and f"{ROOT}cog/19810520_3-2.tif" in text
    assert f"{ROOT}cog/19810520_3-1.tif" not in text  # only the frame under the click
