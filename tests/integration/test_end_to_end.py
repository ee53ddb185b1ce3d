"""Upload -> Airflow DAG -> COGs, tile index, mapfile -> WMS pixels, on the real local services."""

from __future__ import annotations

import os

import geopandas
import pytest
import rasterio
from owslib.wms import WebMapService
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate
from sqlalchemy import text

from ls4_ops.layout import WORK_PREFIX, parse_key
from ls4_ops.mapfile import index_layer_name, mapfile_url
from ls4_ops.tileindex import COLUMNS
from include import local_stack
from include.synthetic import make_frame, make_not_georeferenced
from tests.integration import pipeline, wms

pytestmark = pytest.mark.usefixtures("airflow_db")

NC = "nc/testville/tops_1975/frames/"
BW = "bw/testville/ams_1960/frames/"
UTM = "EPSG:26914"
FRAME = (900, 700)
PIXEL = 1.0  # metres
ORIGIN = (620_000.0, 3_349_000.0)


def frame_bounds(i: int) -> tuple[float, float, float, float]:
    """Adjacent frames in a row, in UTM 14N."""
    x0 = ORIGIN[0] + i * FRAME[0] * PIXEL
    return (x0, ORIGIN[1], x0 + FRAME[0] * PIXEL, ORIGIN[1] + FRAME[1] * PIXEL)


def inner_box(i: int) -> tuple[float, float, float, float]:
    """A box in EPSG:3857 inside frame ``i``, clear of its collar and its neighbours."""
    minx, miny, maxx, maxy = transform_bounds(UTM, "EPSG:3857", *frame_bounds(i))
    inset_x, inset_y = (maxx - minx) * 0.2, (maxy - miny) * 0.2
    return (minx + inset_x, miny + inset_y, maxx - inset_x, maxy - inset_y)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three nc frames in UTM (reprojected by the pipeline) and three bw frames in EPSG:3857."""
    folder = tmp_path_factory.mktemp("frames")
    made = {}
    for i in range(3):
        nc_path = str(folder / f"nc{i}.tif")
        make_frame(nc_path, "nc", *FRAME, crs=UTM, bounds=frame_bounds(i), collar=12)
        made[f"{NC}georef/19750312_4-{i + 1}.tif"] = nc_path
        bw_path = str(folder / f"bw{i}.tif")
        make_frame(bw_path, "bw", *FRAME, crs="EPSG:3857",
                   bounds=transform_bounds(UTM, "EPSG:3857", *frame_bounds(i)))
        made[f"{BW}georef/19600105_{i + 1}.TIF"] = bw_path
    return made


@pytest.fixture(scope="module")
def processed(services, sources):
    for key, path in sources.items():
        pipeline.upload(path, key)
    # Original scans for all but the last nc frame (that one must be notified as missing).
    pipeline.upload(sources[f"{NC}georef/19750312_4-1.tif"], f"{NC}scanned/19750312_4-1.tif")
    pipeline.upload(sources[f"{NC}georef/19750312_4-2.tif"], f"{NC}scanned/19750312_4-2.TIF")
    # What S3 consoles and people leave behind: a folder marker, and a note among the scans.
    pipeline.s3().put_object(Bucket=pipeline.bucket(), Key=f"{NC}georef/", Body=b"")
    pipeline.s3().put_object(Bucket=pipeline.bucket(), Key=f"{NC}scanned/notes.txt", Body=b"rolls 4-5")
    collections = pipeline.discover()
    runs = {}
    for name in ("testville_tops_1975_frames", "testville_ams_1960_frames"):
        assert name in collections
        runs[name] = pipeline.run_dag(collections[name].dag_id)
    return collections, runs


def test_each_collection_run_succeeds_and_writes_valid_cogs(processed, sources, tmp_path):
    collections, runs = processed
    assert {name: run.state for name, run in runs.items()} == {
        "testville_tops_1975_frames": "success", "testville_ams_1960_frames": "success"}
    for run in runs.values():
        assert pipeline.returned(run, "report") == "3 uploads processed (3 uploads seen = 3 indexed + 0 not processed)"
    client = pipeline.s3()
    for key in sources:
        cog_key = parse_key(key).cog_key
        head = client.head_object(Bucket=pipeline.bucket(), Key=cog_key)
        assert head["Metadata"]["ls4-source-etag"] == client.head_object(
            Bucket=pipeline.bucket(), Key=key)["ETag"].strip('"')
        assert pipeline.readable_by_anyone(cog_key)
        local = str(tmp_path / "cog.tif")
        client.download_file(pipeline.bucket(), cog_key, local)
        is_valid, errors, _ = cog_validate(local, quiet=True)
        assert is_valid, (cog_key, errors)


def test_intermediates_are_removed_once_the_cogs_exist(processed):
    collections, _ = processed
    for collection in collections.values():
        listing = pipeline.s3().list_objects_v2(Bucket=pipeline.bucket(), Prefix=f"{WORK_PREFIX}{collection.name}/")
        assert listing["KeyCount"] == 0, [o["Key"] for o in listing.get("Contents", [])]


def test_mapfile_is_published_with_the_s3fs_ownership_metadata(processed):
    collections, _ = processed
    head = pipeline.s3().head_object(Bucket=pipeline.bucket(), Key=collections["testville_ams_1960_frames"].mapfile_key)
    assert {key: head["Metadata"][key] for key in ("uid", "gid", "mode")} == {
        "uid": os.environ.get("LS4_MAPFILE_UID", "0"), "gid": os.environ.get("LS4_MAPFILE_GID", "0"),
        "mode": str(0o100644)}
    assert abs(int(head["Metadata"]["mtime"]) - head["LastModified"].timestamp()) < 120


def test_tile_index_in_postgis_and_s3(processed, tmp_path):
    collections, _ = processed
    nc = collections["testville_tops_1975_frames"]
    with local_stack.postgis_engine().connect() as connection:
        rows = connection.execute(text(
            "select location, src_srs, date, roll, frame_num, dl_orig, dl_georef, dl_index, "
            "ST_SRID(geom) from testville_tops_1975_frames order by frame_num")).all()
    assert [r.frame_num for r in rows] == ["1", "2", "3"]
    assert all(r.date == "19750312" and r.roll == "4" and r.src_srs == "EPSG:3857" for r in rows)
    # MapServer reads the COG by its public URL, versioned by its ETag (so GDAL's cache can stay on).
    cog_etag = pipeline.s3().head_object(Bucket=pipeline.bucket(), Key=f"{NC}cog/19750312_4-1.tif")["ETag"]
    assert rows[0].location == f"/vsicurl/{rows[0].dl_georef}?v={cog_etag.strip(chr(34))}"
    assert rows[0].dl_orig.endswith(f"{NC}scanned/19750312_4-1.tif")
    assert rows[1].dl_orig.endswith(f"{NC}scanned/19750312_4-2.TIF")
    assert not rows[2].dl_orig  # no scan: empty (NULL in PostGIS)
    assert rows[0].dl_georef.endswith(f"{NC}cog/19750312_4-1.tif")
    assert rows[0].dl_index.endswith(nc.tile_index_zip_key)
    assert {r[-1] for r in rows} == {3857}
    client = pipeline.s3()
    for key in (nc.tile_index_key(".shp"), nc.tile_index_key(".dbf"), nc.tile_index_key(".prj")):
        client.head_object(Bucket=pipeline.bucket(), Key=key)
    zip_path = tmp_path / "index.zip"
    client.download_file(pipeline.bucket(), nc.tile_index_zip_key, str(zip_path))
    shapefile = geopandas.read_file(f"zip://{zip_path}!{nc.name}.shp")
    assert list(shapefile.columns[:len(COLUMNS) + 1]) == ["gid", *COLUMNS]
    assert len(shapefile) == 3
    assert shapefile.crs.to_epsg() == 3857


def test_missing_scan_is_notified(processed, sources):
    missing = [n["key"] for n in pipeline.notifications() if n["subject"] == "original scan missing"]
    assert [key for key in missing if key.startswith(NC)] == [f"{NC}georef/19750312_4-3.tif"]
    assert sorted(key for key in missing if key.startswith(BW)) == sorted(k for k in sources if k.startswith(BW))


@pytest.mark.parametrize("name, band_count", [("testville_tops_1975_frames", 3),
                                               ("testville_ams_1960_frames", 1)])
def test_wms_getmap_pixels_match_the_source(processed, sources, name, band_count):
    collections, _ = processed
    collection = collections[name]
    pipeline.wait_for_mapfile(collection)
    middle_frame = {"testville_tops_1975_frames": f"{NC}georef/19750312_4-2.tif",
                    "testville_ams_1960_frames": f"{BW}georef/19600105_2.TIF"}[name]
    source = sources[middle_frame]
    bbox = inner_box(1)
    rendered = wms.get_map(os.environ["LS4_WMS_URL"], collection, bbox)
    expected, valid = wms.source_in_box(source, bbox, bands=band_count)
    assert wms.mean_abs_difference(rendered, expected, valid) < 4.0


def test_wms_getfeatureinfo_returns_the_frame_attributes(processed):
    collections, _ = processed
    collection = collections["testville_tops_1975_frames"]
    pipeline.wait_for_mapfile(collection)
    bbox = transform_bounds(UTM, "EPSG:3857", *frame_bounds(1))
    info = wms.get_feature_info(os.environ["LS4_WMS_URL"], collection, bbox, 128, 128)
    assert index_layer_name(collection) in info
    assert "frame_num = '2'" in info
    assert "date = '19750312'" in info
    assert f"{NC}cog/19750312_4-2.tif" in info


def test_capabilities_list_the_collection_layers(processed):
    collections, _ = processed
    collection = collections["testville_ams_1960_frames"]
    pipeline.wait_for_mapfile(collection)
    service = WebMapService(mapfile_url(collection, os.environ["LS4_WMS_URL"]), version="1.3.0")
    assert collection.name in service.contents
    assert index_layer_name(collection) in service.contents
    assert service.identification.title == collection.title


def test_unchanged_collection_run_does_no_raster_work(processed, sources):
    collections, _ = processed
    collection = collections["testville_ams_1960_frames"]
    cogs = [parse_key(k).cog_key for k in sources if k.startswith(collection.root)]
    before = pipeline.last_modified(cogs)
    run = pipeline.run_dag(collection.dag_id)
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan"] == "success"
    assert [states[task] for task in ("frame.compress", "tile_index", "mapfile")] == ["skipped"] * 3
    after = pipeline.last_modified(cogs)
    assert after == before


def test_scans_cogs_the_index_zip_and_the_preview_are_readable_by_anyone_and_nothing_else_is(processed):
    collection = parse_key(f"{NC}georef/x.tif").collection
    for key in (f"{NC}scanned/19750312_4-1.tif", f"{NC}scanned/19750312_4-2.TIF",
                f"{NC}georef/19750312_4-1.tif", f"{NC}cog/19750312_4-1.tif", collection.tile_index_zip_key,
                collection.preview_key):
        assert pipeline.readable_by_anyone(key), key
    # Only uploads the layout accepts are public; mapfiles never are.
    for key in (f"{NC}scanned/notes.txt", collection.mapfile_key):
        assert not pipeline.readable_by_anyone(key), key
    # By the bucket policy: the bucket refuses ACLs, and no object has one.
    assert not pipeline.has_public_read_acl(f"{NC}cog/19750312_4-1.tif")


def test_folder_marker_is_not_an_upload(processed):
    assert [n for n in pipeline.notifications() if n["key"] == f"{NC}georef/"] == []


def test_manual_run_reprocesses_only_the_frames_asked_for(processed, sources):
    collections, _ = processed
    collection = collections["testville_ams_1960_frames"]
    cogs = sorted(parse_key(k).cog_key for k in sources if k.startswith(collection.root))
    before = pipeline.last_modified(cogs)
    one = f"{BW}georef/19600105_2.TIF"
    # A key that cannot be processed fails the run before anything is done.
    run = pipeline.run_dag(collection.dag_id, keys=[one, "19600105_9.TIF"])
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan"] == "failed"
    assert pipeline.last_modified(cogs) == before
    failed = [n["reason"] for n in pipeline.notifications() if n["subject"] == f"{collection.dag_id}.plan failed"]
    assert f"{BW}georef/19600105_9.TIF: there is no such georef upload" in failed[-1]
    # The file name alone is enough, and naming an up-to-date frame reprocesses it.
    run = pipeline.run_dag(collection.dag_id, keys=["19600105_2.TIF"])
    assert run.state == "success"
    after = pipeline.last_modified(cogs)
    assert [k for k in cogs if after[k] != before[k]] == [parse_key(one).cog_key]
    run = pipeline.run_dag(collection.dag_id, force=True)
    assert run.state == "success"
    again = pipeline.last_modified(cogs)
    assert all(again[k] > after[k] for k in cogs)


def test_bad_upload_is_notified_and_does_not_block_the_collection(processed, sources, tmp_path):
    collections, _ = processed
    collection = collections["testville_tops_1975_frames"]
    bad = str(tmp_path / "plain.tif")
    make_not_georeferenced(bad)
    bad_key = f"{NC}georef/19750312_4-9.tif"
    pipeline.upload(bad, bad_key)
    good_key = f"{NC}georef/19750312_4-1.tif"
    changed = str(tmp_path / "changed.tif")
    with rasterio.open(sources[good_key]) as src:
        profile = src.profile
        pixels = 255 - src.read()  # the same frame, as a negative
    with rasterio.open(changed, "w", **profile) as dst:
        dst.write(pixels)
    pipeline.upload(changed, good_key)  # a changed re-upload: its COG must be replaced
    run = pipeline.run_dag(collection.dag_id)
    assert run.state == "failed"  # the report task names the bad upload
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("tile_index", -1)] == "success"
    assert states[("mapfile", -1)] == "success"
    reasons = [n["reason"] for n in pipeline.notifications()
               if n["key"] == bad_key and n["subject"] == "upload cannot be processed"]
    assert len(reasons) == 1 and "not georeferenced" in reasons[0]
    # The bad version is not tried again (nor notified) until it changes; the run is not
    # green while it is left unprocessed.
    notified = len(pipeline.notifications())
    again = pipeline.run_dag(collection.dag_id)
    assert again.state == "failed"
    states = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert states["frame.compress"] == "skipped" and states["report"] == "failed"
    assert len(pipeline.notifications()) == notified
    client = pipeline.s3()
    client.head_object(Bucket=pipeline.bucket(), Key=bad_key)  # the upload is never deleted
    head = client.head_object(Bucket=pipeline.bucket(), Key=parse_key(good_key).cog_key)
    assert head["Metadata"]["ls4-source-etag"] == client.head_object(
        Bucket=pipeline.bucket(), Key=good_key)["ETag"].strip('"')
    # The WMS serves the new COG at once, not what its long-lived processes cached.
    bbox = inner_box(0)
    rendered = wms.get_map(os.environ["LS4_WMS_URL"], collection, bbox)
    expected, valid = wms.source_in_box(changed, bbox, bands=3)
    assert wms.mean_abs_difference(rendered, expected, valid) < 4.0


def test_parsed_names_are_not_reported(processed):
    assert not [n for n in pipeline.notifications()
                if n["subject"] == "file name not understood" and n["key"].startswith((NC, BW))]


def test_no_secret_in_any_object_of_the_bucket(processed):
    client = pipeline.s3()
    secrets = [os.environ["LS4_S3_SECRET_KEY"].encode(), os.environ["LS4_PG_PASSWORD"].encode()]
    paginator = client.get_paginator("list_objects_v2")
    checked = 0
    for page in paginator.paginate(Bucket=pipeline.bucket()):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=pipeline.bucket(), Key=obj["Key"])["Body"].read()
            assert not any(secret in body for secret in secrets), obj["Key"]
            checked += 1
    assert checked > 10
