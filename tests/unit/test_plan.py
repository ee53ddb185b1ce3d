"""Planning a collection run: raster work, index work, what to publish and notify."""

from datetime import datetime, timezone

import pytest

from ls4_ops.layout import parse_key
from ls4_ops.plan import CogSource, CollectionState, RunRequest, S3Object, cogs_to_inspect, plan_run, \
    processed_notices, report_run, run_request
from ls4_ops.settings import Settings
from ls4_ops.tileindex import IndexedCog

PREFIX = "nc/anderson/tops_1975/frames/georef/"
COLLECTION = parse_key(PREFIX + "x.tif").collection
COG = "nc/anderson/tops_1975/frames/cog/"
SCANNED = "nc/anderson/tops_1975/frames/scanned/"
SETTINGS = Settings(public_url="https://pub")
EARLIER = datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc)


def obj(name, etag="e1", size=10, minute=0, prefix=PREFIX):
    return S3Object(prefix + name, etag, size, datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc))


def processed(georef, made_from, scans=(), **state):
    """The state of a collection whose COGs (and index rows) were made from the ETags in ``made_from``."""
    cogs = {COG + name: obj(name, "cog-etag", prefix=COG) for name in made_from}
    rows = {COG + name: IndexedCog(etag, "") for name, etag in made_from.items()}
    scanned = {SCANNED + name: obj(name, prefix=SCANNED) for name in scans}
    return CollectionState(georef=georef, scanned=scanned, cogs=cogs, indexed=state.pop("indexed", rows),
                           **state)


def planned(state, request=RunRequest(), since=EARLIER):
    state.sources = {key: state.sources.get(key, CogSource(state.indexed[key].source_etag, "k")
                                            if key in state.indexed else None)
                     for key in cogs_to_inspect(COLLECTION, state)} | dict(state.sources)
    return plan_run(COLLECTION, state, request, since=since, settings=SETTINGS)


def test_new_and_changed_uploads_are_planned_unchanged_are_not():
    georef = [obj("a.tif", "e1"), obj("b.tif", "e2"), obj("c.TIF", "e3")]
    plan = planned(processed(georef, {"a.tif": "e1", "b.tif": "old"}))
    assert [item["key"] for item in plan.todo] == [PREFIX + "b.tif", PREFIX + "c.TIF"]
    assert plan.todo[1] == {"key": PREFIX + "c.TIF", "etag": "e3", "cog_key": COG + "c.tif", "scan": ""}
    assert plan.up_to_date == [PREFIX + "a.tif"]
    assert plan.problems == []


def test_an_unchanged_collection_needs_no_head_and_has_no_work():
    georef = [obj("a.tif"), obj("b.tif")]
    state = processed(georef, {"a.tif": "e1", "b.tif": "e1"}, published_index=4, published_mapfile=4,
                      published_preview=4, generation=4, overview_generation=4)
    assert cogs_to_inspect(COLLECTION, state) == []
    plan = plan_run(COLLECTION, state, since=EARLIER, settings=SETTINGS)
    assert not plan.has_work
    assert plan.make_public == [] and plan.notices == []


def test_a_cog_without_its_row_is_indexed_without_raster_work():
    georef = [obj("a.tif", "e1"), obj("b.tif", "e2")]
    state = processed(georef, {"a.tif": "e1", "b.tif": "e2"}, indexed={COG + "a.tif": IndexedCog("e1", "")})
    assert cogs_to_inspect(COLLECTION, state) == [COG + "b.tif"]
    state.sources = {COG + "b.tif": CogSource("e2", PREFIX + "b.tif")}
    plan = plan_run(COLLECTION, state, since=EARLIER, settings=SETTINGS)
    assert plan.todo == []
    assert plan.index.add == [{"key": PREFIX + "b.tif", "etag": "e2", "cog_key": COG + "b.tif", "scan": "",
                               "cog_etag": "cog-etag"}]


def test_a_cog_made_from_an_older_version_is_redone_even_if_its_row_is_missing():
    state = processed([obj("a.tif", "new")], {"a.tif": "old"}, indexed={})
    state.sources = {COG + "a.tif": CogSource("old", PREFIX + "a.tif")}
    plan = plan_run(COLLECTION, state, since=EARLIER, settings=SETTINGS)
    assert [item["key"] for item in plan.todo] == [PREFIX + "a.tif"]
    assert plan.index.add == []


def test_a_scan_uploaded_after_its_cog_updates_the_download_link():
    state = processed([obj("a.tif")], {"a.tif": "e1"}, scans=["a.TIF"], generation=1, published_index=1,
                      published_mapfile=1, published_preview=1, overview_generation=1)
    plan = planned(state)
    assert plan.todo == []
    assert plan.index.scan_links == {COG + "a.tif": f"https://pub/{SCANNED}a.TIF"}


def test_deleted_upload_removes_its_cog_and_row_and_a_stray_object_is_only_reported():
    georef = [obj("a.tif")]
    state = processed(georef, {"a.tif": "e1", "gone.tif": "e9"})
    state.cogs[COG + "notes.tif"] = obj("notes.tif", prefix=COG, minute=40)
    state.indexed = {**state.indexed, COG + "row-only.tif": IndexedCog("e5", "")}
    assert cogs_to_inspect(COLLECTION, state) == [COG + "gone.tif", COG + "notes.tif"]
    state.sources = {COG + "gone.tif": CogSource("e9", PREFIX + "gone.tif"), COG + "notes.tif": CogSource("", "")}
    plan = plan_run(COLLECTION, state, since=EARLIER, settings=SETTINGS)
    assert plan.index.remove == [
        {"cog_key": COG + "gone.tif", "source_key": PREFIX + "gone.tif", "source_etag": "e9", "delete_cog": True},
        {"cog_key": COG + "row-only.tif", "source_key": "", "source_etag": "e5", "delete_cog": False},
    ]
    assert [(n.subject, n.key) for n in plan.notices] == [("object under cog/ not made by ls4", COG + "notes.tif")]
    # Reported once: the next run (which began after it appeared) says nothing more.
    later = plan_run(COLLECTION, state, since=datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc), settings=SETTINGS)
    assert later.notices == []


def test_shapefile_overview_mapfile_or_page_behind_the_table_are_redone():
    georef = [obj("a.tif")]
    current = {"generation": 7, "published_index": 7, "published_mapfile": 7, "published_preview": 7,
               "overview_generation": 7}
    assert not planned(processed(georef, {"a.tif": "e1"}, **current)).has_work
    for behind in ({"published_index": 6}, {"published_mapfile": None}, {"published_preview": 3},
                   {"overview_generation": 5}):
        plan = planned(processed(georef, {"a.tif": "e1"}, **{**current, **behind}))
        assert plan.index.publish and plan.has_work and plan.todo == []
    # An empty index has no mapfile or page to keep current.
    empty = processed([], {}, generation=2, published_index=2, published_mapfile=None, overview_generation=2)
    assert not planned(empty).has_work


def test_a_version_that_failed_is_left_alone_until_it_changes_or_is_named():
    georef = [obj("bad.tif", "v1"), obj("good.tif", "e1")]
    state = processed(georef, {"good.tif": "e1"}, failed={PREFIX + "bad.tif": "v1"})
    plan = planned(state)
    assert plan.todo == [] and plan.known_bad == [PREFIX + "bad.tif"]
    changed = processed([obj("bad.tif", "v2"), obj("good.tif", "e1")], {"good.tif": "e1"},
                        failed={PREFIX + "bad.tif": "v1"})
    assert [item["etag"] for item in planned(changed).todo] == ["v2"]
    for request in (RunRequest((PREFIX + "bad.tif",)), RunRequest(force=True)):
        assert PREFIX + "bad.tif" in [item["key"] for item in planned(state, request).todo]


def test_force_and_keys_select_what_is_reprocessed():
    georef = [obj("a.tif"), obj("b.tif"), obj("c.tif")]
    state = processed(georef, {name: "e1" for name in ("a.tif", "b.tif", "c.tif")})
    assert planned(state).todo == []
    assert len(planned(state, RunRequest(force=True)).todo) == 3
    # Naming up-to-date uploads is enough to reprocess them; force adds nothing then.
    for force in (False, True):
        only = planned(state, RunRequest((PREFIX + "b.tif", PREFIX + "c.tif"), force))
        assert [item["key"] for item in only.todo] == [PREFIX + "b.tif", PREFIX + "c.tif"]
        assert only.up_to_date == [] and only.not_found == []


def test_bad_uploads_are_reported_and_never_block_the_rest():
    georef = [obj("good.tif"), obj("empty.tif", size=0), obj("bad name.tif"),
              S3Object("nc/anderson/tops_1975/frames/georef/sub/x.tif", "e", 5)]
    plan = planned(processed(georef, {}), since=None)  # a first run: everything is new
    assert [item["key"] for item in plan.todo] == [PREFIX + "good.tif"]
    reasons = {n.key: n.reason for n in plan.problems}
    assert "empty (0 bytes)" in reasons[PREFIX + "empty.tif"]
    assert "no spaces" in reasons[PREFIX + "bad name.tif"]
    assert "6 path parts" in reasons["nc/anderson/tops_1975/frames/georef/sub/x.tif"]
    assert plan.notices == plan.problems
    # A key outside the layout is told as discovery tells it (the same notice: sent once).
    assert {n.key: n.subject for n in plan.notices}["nc/anderson/tops_1975/frames/georef/sub/x.tif"] == \
        "upload outside the bucket layout"
    assert plan.unprocessed() == {"problems": reasons, "known_bad": [], "seen": 4, "up_to_date": 0,
                                  "not_requested": 0}


def test_an_upload_larger_than_the_limit_is_refused_with_its_reason_before_any_raster_work():
    georef = [obj("big.tif", size=3 * 2**30), obj("fits.tif", size=2**30)]
    plan = plan_run(COLLECTION, processed(georef, {}), since=EARLIER,
                    settings=Settings(public_url="https://pub", max_upload_bytes=2 * 2**30))
    assert [item["key"] for item in plan.todo] == [PREFIX + "fits.tif"]
    assert [(n.key, n.reason) for n in plan.problems] == [
        (PREFIX + "big.tif", "the file is 3.0 GiB, more than ls4 takes (2.0 GiB, LS4_MAX_UPLOAD_BYTES): split it, "
                             "or raise the limit")]


def test_same_stem_in_two_cases_uses_the_newer_upload_and_reports_the_other():
    georef = [obj("a.TIF", "new", minute=5), obj("a.tif", "old", minute=1)]
    plan = planned(processed(georef, {}))
    assert plan.todo == [{"key": PREFIX + "a.TIF", "etag": "new", "cog_key": COG + "a.tif", "scan": ""}]
    assert [(n.key, n.etag) for n in plan.problems] == [(PREFIX + "a.tif", "old")]


def test_requested_keys_that_cannot_be_processed_are_named_with_the_reason():
    georef = [obj("a.tif"), obj("empty.tif", size=0), obj("d.TIF", minute=5), obj("d.tif", minute=1)]
    asked = (PREFIX + "zzz.tif", PREFIX + "empty.tif", PREFIX + "d.tif", PREFIX + "a.tif")
    plan = planned(processed(georef, {}), RunRequest(asked))
    assert [item["key"] for item in plan.todo] == [PREFIX + "a.tif"]
    reasons = dict(plan.not_found)
    assert list(reasons) == list(asked[:3])
    assert "no such georef upload" in reasons[PREFIX + "zzz.tif"]
    assert "0 bytes" in reasons[PREFIX + "empty.tif"]
    assert "newer upload" in reasons[PREFIX + "d.tif"]


def test_folder_markers_are_neither_uploads_nor_problems():
    plan = planned(processed([S3Object(PREFIX, "e0", 0), obj("a.tif")], {}))
    assert [item["key"] for item in plan.todo] == [PREFIX + "a.tif"]
    assert plan.problems == []


def test_new_scans_and_planned_uploads_are_made_public_and_missing_scans_notified():
    georef = [obj("19750312_4-1.tif", minute=50), obj("19750312_4-2.tif", minute=50), obj("old.tif", minute=1)]
    state = processed(georef, {"old.tif": "e1"}, scans=["19750312_4-1.TIF"])
    state.scanned[SCANNED + "older.tif"] = obj("older.tif", prefix=SCANNED, minute=5)
    plan = planned(state)
    assert [item["scan"] for item in plan.todo] == [SCANNED + "19750312_4-1.TIF", ""]
    # Older objects were made public by the run that saw them first.
    assert sorted(plan.make_public) == [PREFIX + "19750312_4-1.tif", PREFIX + "19750312_4-2.tif"]
    # A missing scan is told once the frame is processed (an unreadable upload is told only that).
    assert plan.notices == []
    assert [(n.subject, n.key) for n in processed_notices(COLLECTION, plan.todo)] == [
        ("original scan missing", PREFIX + "19750312_4-2.tif")]
    forced = planned(state, RunRequest(force=True))
    assert SCANNED + "older.tif" in forced.make_public and PREFIX + "old.tif" in forced.make_public


def test_names_that_do_not_parse_are_processed_and_notified_once_processed():
    plan = planned(processed([obj("oddname.tif")], {}))
    assert [item["key"] for item in plan.todo] == [PREFIX + "oddname.tif"]
    assert ("file name not understood", PREFIX + "oddname.tif", "e1") in [
        (n.subject, n.key, n.etag) for n in processed_notices(COLLECTION, plan.todo)]


def item(name, etag="e1"):
    return {"key": PREFIX + name, "etag": etag, "cog_key": COG + name, "scan": ""}


def test_a_run_report_is_clean_only_when_every_upload_was_processed():
    indexed = {COG + "a.tif": IndexedCog("e1", ""), COG + "b.tif": IndexedCog("old", "")}
    clean = report_run([item("a.tif")], indexed, {"problems": {}, "known_bad": [], "seen": 3, "up_to_date": 2}, {})
    assert clean.clean and clean.text == "1 upload processed (3 uploads seen = 3 indexed + 0 not processed)"
    report = report_run([item("a.tif"), item("b.tif"), item("c.tif")], indexed,
                        {"problems": {PREFIX + "empty.tif": "the file is empty"}, "known_bad": [PREFIX + "bad.tif"],
                         "seen": 6, "up_to_date": 1},
                        {PREFIX + "c.tif": "it is not georeferenced", PREFIX + "bad.tif": "it is 16-bit"})
    assert not report.clean and report.lost == 0
    assert [entry["key"] for entry in report.processed] == [PREFIX + "a.tif"]
    assert report.not_processed[PREFIX + "c.tif"] == "it is not georeferenced"
    assert "task failed" in report.not_processed[PREFIX + "b.tif"]  # no recorded reason: a task failure
    assert report.not_processed[PREFIX + "bad.tif"].startswith("it is 16-bit; left alone until a new version")
    assert report.not_processed[PREFIX + "empty.tif"] == "the file is empty"
    assert report.text.startswith("1 upload processed (6 uploads seen = 2 indexed + 4 not processed); "
                                  "4 left unprocessed: ")


def test_the_account_of_a_collections_uploads_balances_or_says_how_many_are_lost():
    georef = [obj("a.tif"), obj("b.tif", "e2"), obj("c.tif"), obj("empty.tif", size=0), obj("bad.tif", "v1")]
    state = processed(georef, {"a.tif": "e1", "b.tif": "old"}, failed={PREFIX + "bad.tif": "v1"})
    plan = planned(state)
    done = {COG + "a.tif": IndexedCog("e1", ""), COG + "b.tif": IndexedCog("e2", ""), COG + "c.tif": IndexedCog("e1", "")}
    report = report_run(plan.todo, done, plan.unprocessed(), {})
    assert (report.seen, report.indexed, len(report.not_processed), report.lost) == (5, 3, 2, 0)
    # A manual run accounts for what it was not asked to do.
    named = planned(state, RunRequest((PREFIX + "c.tif",)))
    assert report_run(named.todo, done, named.unprocessed(), {}).accounting == \
        "5 uploads seen = 1 indexed + 1 not processed + 3 not asked for"
    # An upload the run lost track of (its row gone, say) is counted, and the run is not clean.
    lost = report_run(plan.todo, {COG + "b.tif": IndexedCog("e2", "")}, {**plan.unprocessed(), "seen": 6}, {})
    assert lost.lost == 1 and not lost.clean and lost.accounting.endswith("; 1 UNACCOUNTED FOR")


@pytest.mark.parametrize("keys, force, expected", [
    (None, None, RunRequest()),
    ([], False, RunRequest()),
    ("", False, RunRequest()),
    (PREFIX + "a.tif", False, RunRequest((PREFIX + "a.tif",))),
    (["a.tif", "s3://ls4/" + PREFIX + "b.TIF", PREFIX + "a.tif"], True,
     RunRequest((PREFIX + "a.tif", PREFIX + "b.TIF"), True)),
    (["x/y.tif"], "True", RunRequest(("x/y.tif",), True)),
    ([], "false", RunRequest()),
])
def test_run_conf_takes_keys_paths_urls_or_file_names(keys, force, expected):
    assert run_request(COLLECTION, "ls4", keys, False if force is None else force) == expected


@pytest.mark.parametrize("keys, force, reason", [
    (5, False, "'keys' must be a list"),
    ([["a.tif"]], False, "'keys' must be a list"),
    ([1, "a.tif"], False, "'keys' must be a list"),
    ([""], False, "'keys' must be a list"),
    ({"a.tif": 1}, False, "'keys' must be a list"),
    ([], "yes", "'force' must be true or false"),
    ([], 1, "'force' must be true or false"),
])
def test_a_bad_run_conf_is_refused_with_an_example(keys, force, reason):
    with pytest.raises(ValueError) as error:
        run_request(COLLECTION, "ls4", keys, force)
    assert reason in str(error.value)
    assert '"force": true' in str(error.value)
