import json
import re
from datetime import datetime, timedelta, timezone

import mappyfile
import pytest

from ls4_ops import mapfile, registry
from ls4_ops.layout import parse_key
from ls4_ops.notify import FileNotifier, Notification, notifier_from_setting
from ls4_ops.plan import S3Object
from ls4_ops.settings import Settings

C = parse_key("nc/anderson/ams_1960/frames/georef/x.tif").collection


def built(overview=None):
    return mapfile.build(C, [0, 0, 1000, 1000], wms_url="http://wms.example/wms/", pg_service="ls4",
                         generation=7, overview=overview)


def test_mapfile_is_valid_for_mapserver_8_and_parses_back():
    text = mapfile.render(built())
    parsed = mappyfile.loads(text)
    names = [layer["name"] for layer in parsed["layers"]]
    assert names == ["anderson_ams_1960_frames_index", "anderson_ams_1960_frames_frames"]
    assert parsed["name"] not in names and C.name not in names  # the group's name is the imagery layer
    raster = parsed["layers"][1]
    assert (raster["group"], raster["tileindex"], raster["tileitem"], raster["tilesrs"]) == (
        C.name, "anderson_ams_1960_frames_index", "location", "src_srs")
    assert "maxscaledenom" not in raster  # without an overview, frames at every scale
    assert parsed["web"]["metadata"]["wms_title"] == "Anderson AMS 1960 Frames"
    assert parsed["web"]["metadata"]["wms_onlineresource"] == (
        "http://wms.example/wms/?map=/mapfiles/anderson_ams_1960_frames.map&")
    assert "index generation 7" in parsed["web"]["metadata"]["wms_keywordlist"]


def test_zoomed_out_the_overview_is_drawn_instead_of_the_frames():
    parsed = mappyfile.loads(mapfile.render(built(mapfile.Overview("/vsicurl/https://pub/ov_3.tif", 9.55))))
    _, frames, overview = parsed["layers"]
    assert frames["group"] == overview["group"] == C.name
    assert overview["data"] == "/vsicurl/https://pub/ov_3.tif"
    # Both switch where a screen pixel (at MapServer's 72 dpi) is an overview pixel: 9.55 m.
    assert frames["maxscaledenom"] == overview["minscaledenom"] == pytest.approx(9.55 * 72 / 0.0254)


def test_a_run_tells_the_mapfile_it_published_from_the_capabilities():
    capabilities = (b'<WMS_Capabilities xmlns="http://www.opengis.net/wms"><Service><KeywordList>'
                    b'<Keyword>ls4</Keyword><Keyword>index generation 12</Keyword></KeywordList></Service>'
                    b'</WMS_Capabilities>')
    assert mapfile.shows_generation(capabilities, 12)
    assert not mapfile.shows_generation(capabilities, 1)  # not "index generation 1" within "... 12"


def test_mapfile_holds_no_secret_of_the_deployment():
    secrets = {"LS4_S3_SECRET_KEY": "s3-secret-4711", "LS4_S3_ACCESS_KEY": "s3-key-4711",
               "LS4_PG_PASSWORD": "pg-secret-4711", "LS4_PG_USER": "pg-user-4711", "LS4_PG_HOST": "db.internal"}
    settings = Settings.from_env({**secrets, "LS4_WMS_URL": "http://wms.example/wms/", "LS4_PG_SERVICE": "ls4"})
    text = mapfile.render(mapfile.build(C, [0, 0, 1000, 1000], wms_url=settings.wms_url,
                                        pg_service=settings.pg_service, generation=1))
    assert 'CONNECTION "service=ls4"' in text
    assert not [value for value in secrets.values() if value in text]
    assert not re.search(r"password|user=|host=|AWS_", text, re.IGNORECASE)


def test_invalid_mapfile_is_refused():
    broken = built()
    broken["layers"][0]["type"] = "NOT_A_TYPE"
    with pytest.raises(mapfile.MapfileError):
        mapfile.render(broken)


def test_s3fs_metadata():
    assert mapfile.s3fs_metadata("33", "44", mtime=12.7) == {"uid": "33", "gid": "44", "mode": "33188",
                                                            "mtime": "12"}


def test_registry_round_trip_and_discovery(tmp_path):
    path = str(tmp_path / "sub" / "registry.json")
    assert registry.load(path) == {}
    bucket = registry.survey([
        "nc/anderson/ams_1960/frames/georef/a.tif",
        "nc/anderson/ams_1960/frames/scanned/a.tif",
        "bw/travis/usgs_1952/frames/scanned/b.tif",
        "bw/travis/usgs_1952/frames/georef/c.tif",
        "bw/nowhere/x.tif",
    ])
    assert sorted(c.name for c in bucket.collections) == ["anderson_ams_1960_frames", "travis_usgs_1952_frames"]
    registry.save(path, bucket.collections)
    assert set(registry.load(path)) == {c.name for c in bucket.collections}
    assert registry.load(path)["anderson_ams_1960_frames"] == C


def test_a_collection_name_stays_with_the_folder_that_has_it():
    bw = parse_key("bw/anderson/ams_1960/frames/georef/a.tif").collection
    el_paso = parse_key("nc/el_paso/ams_1960/frames/georef/c.tif").collection
    el = parse_key("nc/el/paso_ams_1960/frames/georef/d.tif").collection
    registered, clashes = registry.register({C.name: C}, [bw, C, el_paso, el])
    assert registered == {C.name: C, el.name: el}
    assert [(clash.collection, clash.holder) for clash in clashes] == [(bw, C), (el_paso, el)]
    assert "nc/anderson/ams_1960/frames/ already has" in clashes[0].reason
    assert "rename one of the folders" in clashes[0].reason


def test_a_bad_registry_entry_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "registry.json"
    registry.save(str(path), [C])
    data = json.loads(path.read_text())
    data["collections"]["bad"] = {**C.to_dict(), "county": "Bad County"}
    data["collections"]["partial"] = {"band": "nc"}
    path.write_text(json.dumps(data))
    assert registry.load(str(path)) == {C.name: C}


def test_folder_markers_are_not_uploads():
    bucket = registry.survey(["nc/anderson/ams_1960/frames/georef/", "nc/anderson/ams_1960/frames/georef/a.tif"])
    assert bucket.georef == {C: ["nc/anderson/ams_1960/frames/georef/a.tif"]}


def test_a_change_runs_its_registered_collection_and_a_scan_without_a_dag_is_made_public():
    known = {C.name: C}
    found = registry.decide(known, with_georef=[C], changed_keys=[
        "nc/anderson/ams_1960/frames/georef/a.tif",
        "nc/anderson/ams_1960/frames/scanned/a.tif",  # its DAG makes it public and links it
        "nc/anderson/ams_1960/frames/cog/a.tif",  # ls4's own output: no run for it
        "bw/travis/usgs_1952/frames/scanned/b.TIF",  # no DAG: made public here
        "bw/travis/usgs_1952/index/scanned/usgs_1952_12.tif",
        "bw/travis/usgs_1952/frames/scanned/notes.txt",  # reported, not made public
        "bw/travis/usgs_1952/frames/scanned/",  # a folder marker: nothing
    ], removed_keys=["nc/anderson/ams_1960/frames/georef/gone.tif", "nc/anderson/ams_1960/frames/cog/old.tif",
                     "bw/nowhere/x.tif"])
    assert found.changed == {C.name: ["nc/anderson/ams_1960/frames/georef/a.tif",
                                      "nc/anderson/ams_1960/frames/scanned/a.tif",
                                      "nc/anderson/ams_1960/frames/georef/gone.tif",
                                      "nc/anderson/ams_1960/frames/cog/old.tif"]}
    assert found.make_public == ["bw/travis/usgs_1952/frames/scanned/b.TIF",
                                 "bw/travis/usgs_1952/index/scanned/usgs_1952_12.tif"]
    assert [(n.subject, n.key) for n in found.notices] == [
        ("upload outside the bucket layout", "bw/travis/usgs_1952/frames/scanned/notes.txt")]
    assert found.registry is None and found.new == []


def test_discovery_sends_a_collection_whose_upload_is_gone_to_its_run_until_the_cog_is_removed():
    old = datetime(2026, 1, 1, tzinfo=timezone.utc)
    objects = [S3Object(key, "e", 10, old) for key in (
        "nc/anderson/ams_1960/frames/georef/a.tif", "nc/anderson/ams_1960/frames/cog/a.tif",
        "nc/anderson/ams_1960/frames/cog/b.tif", "nc/anderson/ams_1960/frames/cog/tile_index/x.zip")]
    found = registry.discover(objects, {C.name: C}, since=old + timedelta(hours=1))
    assert found.changed == {C.name: ["nc/anderson/ams_1960/frames/cog/b.tif"]}
    assert registry.discover(objects[:2], {C.name: C}, since=old + timedelta(hours=1)).changed == {}
    # Where the bucket's events start the runs, discovery starts none.
    assert registry.discover(objects, {C.name: C}, old + timedelta(hours=1), start_runs=False).changed == {}


def test_discovery_registers_new_collections_and_reports_only_what_is_new():
    def listed(key, minute):
        return S3Object(key, "e", 10, datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc))
    since = datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc)
    objects = [
        listed("nc/anderson/ams_1960/frames/georef/a.tif", 1),
        listed("bw/anderson/ams_1960/frames/georef/b.tif", 40),  # same name as the registered nc/ folder
        listed("bw/travis/usgs_1952/frames/scanned/old.tif", 1),
        listed("bw/travis/usgs_1952/frames/scanned/new.tif", 40),
        listed("bw/nowhere/old.tif", 1),
        listed("bw/nowhere/new.tif", 40),
        listed("nc/anderson/ams_1960/frames/cog/tile_index/x.zip", 40),  # ls4's own output
    ]
    found = registry.discover(objects, {C.name: C}, since)
    assert found.registry is None and found.new == []  # nothing to save
    assert found.make_public == ["bw/travis/usgs_1952/frames/scanned/new.tif"]
    assert [(n.subject, n.key) for n in found.notices] == [
        ("upload outside the bucket layout", "bw/nowhere/new.tif"),
        ("collection not registered", "bw/anderson/ams_1960/frames/georef/b.tif")]
    first = registry.discover(objects, {}, None)
    assert first.new == ["anderson_ams_1960_frames"] and list(first.registry) == [C.name]
    assert len(first.notices) == 3
    assert first.changed == {}  # a first run starts none: each DAG runs when it first appears


def test_file_notifier_writes_one_json_line_per_notification(tmp_path):
    path = tmp_path / "n.jsonl"
    notifier = notifier_from_setting(f"file:{path}")
    assert isinstance(notifier, FileNotifier)
    notifier.send(Notification("original scan missing", "upload it", key="k1"))
    notifier.send(Notification("upload cannot be processed", "not georeferenced", key="k2"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["key"] for line in lines] == ["k1", "k2"]
    assert lines[1]["text"] == "[ls4] upload cannot be processed (k2): not georeferenced"
    with pytest.raises(ValueError):
        notifier_from_setting("carrier-pigeon")
