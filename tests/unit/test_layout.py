from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ls4_ops.layout import (
    Collection,
    LayoutError,
    OriginalScans,
    frame_attributes,
    is_collection_output,
    is_folder_marker,
    is_output_key,
    parse_key,
    published_collection,
    scanned_stems,
    validate_identifier,
)

word = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
collections = st.builds(
    Collection,
    band=st.sampled_from(["bw", "nc"]),
    county=st.lists(word, min_size=1, max_size=3).map("_".join),
    agency=st.lists(word, min_size=1, max_size=2).map("_".join),
    year=st.integers(1900, 2099).map(str),
    type=st.sampled_from(["frames", "index", "mosaic"]),
)
stems = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)


@given(collections, st.sampled_from(["scanned", "georef", "cog"]), stems, st.sampled_from([".tif", ".TIF"]))
def test_build_then_parse_round_trips(collection, stage, stem, extension):
    key = f"{collection.prefix(stage)}{stem}{extension}"
    upload = parse_key(key)
    assert upload.collection == collection
    assert upload.stage == stage
    assert upload.stem == stem
    assert upload.cog_key == collection.cog_key(stem)
    assert upload.cog_key.endswith(f"/cog/{stem}.tif")
    assert parse_key(upload.cog_key).collection == collection


@given(collections)
def test_derived_names_are_safe_identifiers(collection):
    assert validate_identifier(collection.table) == collection.name
    assert collection.mapfile_key == f"mapfiles/{collection.name}.map"
    assert collection.dag_id == f"ls4_{collection.name}"
    assert Collection.from_dict(collection.to_dict()) == collection


def test_collection_names_and_keys():
    upload = parse_key("nc/anderson/ams_1960/frames/georef/19600312_1-23.TIF")
    c = upload.collection
    assert c.name == "anderson_ams_1960_frames"
    assert c.tile_index_zip_key == "nc/anderson/ams_1960/frames/cog/tile_index/anderson_ams_1960_frames_idx.zip"
    assert c.tile_index_key(".shp") == "nc/anderson/ams_1960/frames/cog/tile_index/anderson_ams_1960_frames.shp"
    assert upload.cog_key == "nc/anderson/ams_1960/frames/cog/19600312_1-23.tif"
    assert c.title == "Anderson AMS 1960 Frames"
    assert c.is_cog_key(upload.cog_key)
    assert not c.is_cog_key(c.tile_index_zip_key)
    assert is_output_key(c.tile_index_zip_key)
    assert not is_output_key(upload.key)


def test_multi_word_county_and_agency():
    c = parse_key("bw/el_paso/usda_bcr_1958/index/georef/usda_1958_12.tif").collection
    assert (c.county, c.agency, c.year) == ("el_paso", "usda_bcr", "1958")
    assert c.name == "el_paso_usda_bcr_1958_index"


@pytest.mark.parametrize("key, reason", [
    ("", "empty"),
    (None, "not NoneType"),
    (b"nc/anderson/ams_1960/frames/georef/x.tif", "not bytes"),
    ("nc/anderson/ams_1960/frames/georef/", ".tif or .TIF"),
    ("nc/anderson/ams_1960/frames/georef", "6 path parts"),
    ("nc/anderson/ams_1960/frames/georef/extra/x.tif", "6 path parts"),
    ("rgb/anderson/ams_1960/frames/georef/x.tif", "band folder"),
    ("nc/Anderson/ams_1960/frames/georef/x.tif", "county folder"),
    ("nc/anderson county/ams_1960/frames/georef/x.tif", "county folder"),
    ("nc/../ams_1960/frames/georef/x.tif", "county folder"),
    ("nc/anderson/ams1960/frames/georef/x.tif", "{agency}_{yyyy}"),
    ("nc/anderson/ams_60/frames/georef/x.tif", "{agency}_{yyyy}"),
    ("nc/anderson/ams_19\u0666\u0660/frames/georef/x.tif", "{agency}_{yyyy}"),
    ("nc/anderson/ams_1960/frame/georef/x.tif", "type folder"),
    ("nc/anderson/ams_1960/frames/raw/x.tif", "stage folder"),
    ("nc/anderson/ams_1960/frames/georef/x.jpg", ".tif or .TIF"),
    ("nc/anderson/ams_1960/frames/georef/x.tiff", ".tif or .TIF"),
    ("nc/anderson/ams_1960/frames/georef/my frame.tif", "no spaces"),
    ("nc/anderson/ams_1960/frames/georef/o'brien.tif", "no spaces"),
    ('nc/anderson/ams_1960/frames/georef/a"b.tif', "no spaces"),
    ("nc/anderson/ams_1960/frames/georef/caf\u00e9.tif", "no spaces"),
    ("nc/anderson/ams_1960/frames/georef/..tif", "no spaces"),
    ("nc/anderson/ams_1960/frames/georef/a..b.tif", "no spaces"),
    ("nc/anderson/ams_1960/frames/georef/.tif", "no spaces"),
    ("nc/anderson/ams_1960/frames/georef/a;drop table x.tif", "no spaces"),
    ("nc/" + "a" * 60 + "/ams_1960/frames/georef/x.tif", "longer than 63"),
    ("nc/anderson/ams_1960/frames/georef/" + "a" * 97 + ".tif", "101 characters long"),
])
def test_keys_outside_the_layout_are_refused_with_a_reason(key, reason):
    with pytest.raises(LayoutError) as error:
        parse_key(key)
    assert reason in str(error.value)


@given(st.text(max_size=80))
def test_any_text_parses_or_raises_layout_error(key):
    try:
        upload = parse_key(key)
    except LayoutError:
        return
    assert validate_identifier(upload.collection.table)
    assert all(ch.isascii() and (ch.isalnum() or ch in "_-./") for ch in upload.key)


def coll(key):
    return parse_key(key).collection


FRAMES = coll("nc/anderson/tops_1975/frames/georef/x.tif")
AMS = coll("bw/anderson/ams_1960/frames/georef/x.tif")
USGS = coll("bw/travis/usgs_1952/frames/georef/x.tif")
STRATMAP = coll("nc/travis/stratmap_2011/frames/georef/x.tif")
INDEX = coll("bw/travis/usda_1958/index/georef/x.tif")
MOSAIC = coll("bw/travis/lgm_1940/mosaic/georef/x.tif")


@pytest.mark.parametrize("collection, stem, expected", [
    (FRAMES, "19750312_4-23", ("19750312", "4", "23")),
    (FRAMES, "1975-03-12_A2-123a", ("1975-03-12", "A2", "123a")),
    (AMS, "19600105_112", ("19600105", "", "112")),
    (USGS, "520601_7", ("520601", "", "7")),
    (STRATMAP, "12_0345_20110203", ("20110203", "12", "0345")),
    (INDEX, "usda_1958_12", ("1958", "", "12")),
    (INDEX, "usda_1958_12_a", ("1958", "", "12")),
    (INDEX, "usda_1958_12_400dpi", ("1958", "", "12")),
    (INDEX, "usda_bcr_1958_12_a", ("1958", "", "12")),
    (INDEX, "tx_dot_1958_12_400dpi", ("1958", "", "12")),
    (INDEX, "USDA_1958_12B.TIF".removesuffix(".TIF"), ("1958", "", "12B")),
    (MOSAIC, "mosaic3", ("MULTIPLE", "MULTIPLE", "3")),
])
def test_frame_attributes_from_real_looking_names(collection, stem, expected):
    attributes = frame_attributes(collection, stem)
    assert attributes.parsed
    assert (attributes.date, attributes.roll, attributes.frame_num) == expected


@pytest.mark.parametrize("collection, stem", [
    (FRAMES, "scan_0001"),
    (FRAMES, "19750312_4_23"),
    (AMS, "19600105_1-112"),
    (STRATMAP, "20110203_12-345"),
    (INDEX, "sheet12"),
    (MOSAIC, "county_mosaic"),
])
def test_unparsed_names_have_empty_attributes_and_a_problem(collection, stem):
    attributes = frame_attributes(collection, stem)
    assert not attributes.parsed
    assert attributes.as_record() == {"date": "", "roll": "", "frame_num": ""}
    assert stem in attributes.problem


def test_index_tiles_map_to_their_untiled_scan():
    assert scanned_stems(INDEX, "usda_1958_12_a") == ["usda_1958_12", "usda_1958_12_a"]
    assert scanned_stems(INDEX, "usda_bcr_1958_12_a") == ["usda_bcr_1958_12", "usda_bcr_1958_12_a"]
    assert scanned_stems(INDEX, "usda_1958_12") == ["usda_1958_12"]
    assert scanned_stems(FRAMES, "19750312_4-23") == ["19750312_4-23"]
    upload = parse_key("bw/travis/usda_1958/index/georef/usda_1958_12_400dpi.tif")
    assert upload.scanned_candidates() == [
        "bw/travis/usda_1958/index/scanned/usda_1958_12.tif",
        "bw/travis/usda_1958/index/scanned/usda_1958_12.TIF",
        "bw/travis/usda_1958/index/scanned/usda_1958_12_400dpi.tif",
        "bw/travis/usda_1958/index/scanned/usda_1958_12_400dpi.TIF",
    ]


SCANNED = "bw/travis/usda_1958/index/scanned/"


@pytest.mark.parametrize("georef, scans, expected", [
    ("usda_1958_12_a.tif", ["usda_1958_12.TIF"], "usda_1958_12.TIF"),
    ("usda_1958_12_400dpi.tif", ["usda_1958_12_400dpi.tif"], "usda_1958_12_400dpi.tif"),
    ("usda_1958_12_400dpi.tif", ["usda_1958_12_400dpi.tif", "usda_1958_12.tif"], "usda_1958_12.tif"),
    ("USDA_1958_12_a.TIF", ["usda_1958_12.tif"], "usda_1958_12.tif"),
    ("usda_1958_12.tif", ["USDA_1958_12.tif", "usda_1958_12.tif"], "usda_1958_12.tif"),
    ("usda_1958_12_a.tif", ["usda_1958_13.tif", "usda_1958_12_b.tif"], None),
])
def test_the_original_scan_of_an_index_sheet_is_found(georef, scans, expected):
    upload = parse_key("bw/travis/usda_1958/index/georef/" + georef)
    found = OriginalScans(SCANNED + name for name in scans).find(upload)
    assert found == (SCANNED + expected if expected else None)


tokens = st.from_regex(r"[A-Za-z0-9]{1,5}", fullmatch=True)
dates = st.dates(date(1900, 1, 1), date(2099, 12, 31)).map(lambda d: d.strftime("%Y%m%d"))


@given(collections.filter(lambda c: c.agency not in ("ams", "usgs", "stratmap")), dates, tokens, tokens)
def test_frame_names_with_rolls_round_trip(collection, date, roll, frame):
    collection = Collection(collection.band, collection.county, collection.agency, collection.year, "frames")
    attributes = frame_attributes(collection, f"{date}_{roll}-{frame}")
    assert (attributes.date, attributes.roll, attributes.frame_num) == (date, roll, frame)


@given(st.lists(st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=3).map("_".join),
       st.integers(1900, 2099).map(str), tokens, st.sampled_from(["", "_a", "_b2", "_400dpi", "_a_300dpi"]))
def test_index_sheet_names_round_trip_to_their_untiled_scan(agency, year, sheet, note):
    stem = f"{agency}_{year}_{sheet}{note}"
    attributes = frame_attributes(INDEX, stem)
    assert (attributes.date, attributes.frame_num) == (year, sheet)
    assert scanned_stems(INDEX, stem)[0] == f"{agency}_{year}_{sheet}"


def test_folder_markers_are_not_uploads():
    assert is_folder_marker("nc/anderson/ams_1960/frames/georef/")
    assert not is_folder_marker("nc/anderson/ams_1960/frames/georef/x.tif")


@given(collections, st.integers(0, 10**6), st.integers(0, 20))
def test_what_ls4_writes_beside_the_cogs_and_in_mapfiles_is_recognised_as_its_own(collection, generation, zoom):
    assert is_collection_output(collection.overview_key(generation, zoom))
    assert is_collection_output(collection.tile_index_zip_key)
    assert is_collection_output(collection.tile_index_key(".dbf"))
    assert published_collection(collection.mapfile_key) == (collection.name, ".map")
    assert published_collection(collection.preview_key) == (collection.name, ".html")


@pytest.mark.parametrize("key", [
    "nc/anderson/ams_1960/frames/cog/tile_index/notes.txt",
    "nc/anderson/ams_1960/frames/cog/overview/other_overview_1_z14.tif",
    "nc/anderson/ams_1960/frames/cog/elsewhere/anderson_ams_1960_frames.shp",
    "nc/anderson/ams_1960/frames/georef/tile_index/anderson_ams_1960_frames.shp",
    "nc/anderson/ams_1960/frames/cog/x.tif",
])
def test_other_keys_under_cog_are_not_taken_for_index_or_overview_files(key):
    assert not is_collection_output(key)


@pytest.mark.parametrize("key", ["mapfiles/notes.txt", "mapfiles/sub/x.map", "mapfiles/Anderson.map",
                                 "mapfiles/x.map.bak", "mapfiles/", "other/x.map"])
def test_only_collection_mapfiles_and_pages_are_published_names(key):
    assert published_collection(key) is None
