"""Daily maintenance decisions, on listings built in memory: what is taken out of service,
what is only reported, and that nothing a user uploaded is ever touched."""

import json
from datetime import datetime, timedelta, timezone


from ls4_ops import maintenance
from ls4_ops.layout import parse_key
from ls4_ops.maintenance import Finding, Inputs, Report, decide
from ls4_ops.plan import S3Object

NOW = datetime(2026, 12, 3, 4, 0, tzinfo=timezone.utc)
LONG_AGO = NOW - timedelta(days=30)
GOOD = parse_key("nc/anderson/ams_1960/frames/georef/x.tif").collection
GONE = parse_key("bw/travis/usda_1951/index/georef/x.tif").collection
STAMP = NOW.strftime(maintenance.STAMP_FORMAT)


def obj(key, etag="e1", when=LONG_AGO):
    return S3Object(key, etag, 10, when)


def good_collection() -> list[S3Object]:
    """A processed collection with its scan, COG, index files, overview, mapfile and page."""
    return [obj(GOOD.prefix("georef") + "19600101_1-1.tif"), obj(GOOD.prefix("scanned") + "19600101_1-1.tif"),
            obj(GOOD.cog_key("19600101_1-1")), obj(GOOD.tile_index_zip_key), obj(GOOD.tile_index_key(".shp")),
            obj(GOOD.overview_key(3, 14)), obj(GOOD.mapfile_key), obj(GOOD.preview_key),
            obj("geojson/compiled_historical_indexes.geojson"), obj("mapfiles/")]


def inputs(*extra: S3Object, tables=(GOOD.table,), catalog=None, public=None) -> Inputs:
    objects = good_collection() + list(extra)
    catalog = {table: LONG_AGO for table in tables} if catalog is None else catalog
    return Inputs(objects=objects, tables=set(tables), catalog=catalog, public=public or {})


def found(given: Inputs, **kwargs) -> dict[str, Finding]:
    return {finding.key: finding for finding in decide(given, now=NOW, **kwargs)}


def test_a_good_processed_collection_has_no_finding():
    assert found(inputs()) == {}


def test_an_orphan_mapfile_and_its_page_are_moved_to_quarantine():
    orphan = [obj(GONE.mapfile_key, "m1"), obj(GONE.preview_key, "p1")]
    findings = found(inputs(*orphan))
    assert set(findings) == {GONE.mapfile_key, GONE.preview_key}
    mapfile = findings[GONE.mapfile_key]
    assert (mapfile.kind, mapfile.action, mapfile.collection, mapfile.etag) == \
        (maintenance.ORPHAN_MAPFILE, maintenance.MOVE, GONE.name, "m1")
    assert mapfile.target == f"quarantine/{STAMP}/{GONE.mapfile_key}"
    assert findings[GONE.preview_key].target == f"quarantine/{STAMP}/{GONE.preview_key}"


def test_objects_in_mapfiles_that_are_not_mapfiles_are_moved_to_quarantine():
    strays = ["mapfiles/notes.txt", "mapfiles/old/x.map", "mapfiles/Anderson.map"]
    findings = found(inputs(*map(obj, strays)))
    assert set(findings) == set(strays)
    assert {(f.kind, f.action) for f in findings.values()} == {(maintenance.NOT_A_MAPFILE, maintenance.MOVE)}
    assert findings["mapfiles/notes.txt"].target == f"quarantine/{STAMP}/mapfiles/notes.txt"


def test_removal_for_good_only_with_the_setting():
    given = inputs(obj(GONE.mapfile_key), obj("mapfiles/notes.txt"), tables=(GOOD.table, GONE.table))
    quarantined = found(given)
    assert quarantined[GONE.table].action == maintenance.MOVE_TABLE
    assert quarantined[GONE.table].target == f"{GONE.table}_{STAMP}"
    deleted = found(given, delete=True)
    assert {key: f.action for key, f in deleted.items()} == {
        GONE.mapfile_key: maintenance.DELETE, "mapfiles/notes.txt": maintenance.DELETE,
        GONE.table: maintenance.DROP_TABLE}
    assert all(f.target == "" for f in deleted.values())


def test_the_table_of_a_collection_without_uploads_is_quarantined_with_its_mapfile():
    findings = found(inputs(obj(GONE.mapfile_key), tables=(GOOD.table, GONE.table)))
    table = findings[GONE.table]
    assert (table.kind, table.action, table.collection) == (maintenance.ORPHAN_TABLE, maintenance.MOVE_TABLE, GONE.name)
    assert findings[GONE.mapfile_key].action == maintenance.MOVE


def test_a_table_that_changed_in_the_last_hours_is_left_for_the_next_run():
    recent = NOW - maintenance.IN_FLIGHT + timedelta(minutes=5)
    findings = found(inputs(obj(GONE.mapfile_key), tables=(GOOD.table, GONE.table),
                            catalog={GOOD.table: LONG_AGO, GONE.table: recent}))
    assert findings == {}


def test_a_quarantine_name_fits_postgresql_and_stays_a_valid_identifier():
    long_name = "a" * 63
    assert len(maintenance.quarantine_table(long_name, STAMP)) == 63


def test_a_collection_with_uploads_is_never_taken_out_of_service():
    """No table (it was lost) or no mapfile (not published yet): its next run puts that right."""
    no_table = found(inputs(tables=()))
    assert {(k, f.kind, f.action) for k, f in no_table.items()} == {
        (GOOD.table, maintenance.TABLE_MISSING, maintenance.REPORT)}
    without_mapfile = [o for o in good_collection() if o.key not in (GOOD.mapfile_key, GOOD.preview_key)]
    missing = decide(Inputs(without_mapfile, {GOOD.table}, {GOOD.table: LONG_AGO}), now=NOW)
    assert [(f.kind, f.action) for f in missing] == [(maintenance.MAPFILE_MISSING, maintenance.REPORT)]
    # ... unless its table changed in the last hours: its run may be about to publish it.
    assert decide(Inputs(without_mapfile, {GOOD.table}, {GOOD.table: NOW - timedelta(hours=1)}), now=NOW) == []


def test_a_mapfile_of_a_table_ls4_does_not_catalogue_is_left_alone():
    findings = found(inputs(obj("mapfiles/someone_elses.map"), tables=(GOOD.table, "someone_elses"),
                            catalog={GOOD.table: LONG_AGO}))
    assert findings == {}


def test_a_listing_without_any_upload_takes_nothing_out_of_service():
    """A wrong bucket name must not quarantine the archive."""
    given = Inputs([obj(GOOD.mapfile_key), obj(GONE.mapfile_key)], {GOOD.table, GONE.table},
                   {GOOD.table: LONG_AGO, GONE.table: LONG_AGO})
    findings = decide(given, now=NOW)
    assert [(f.kind, f.action) for f in findings] == [(maintenance.NO_UPLOADS, maintenance.REPORT)]


LAYOUT_VIOLATIONS = [
    "nc/anderson/ams_1960/frames/georef/extra/19600101_1-2.tif",  # too deep
    "nc/anderson/ams_1960/19600101_1-2.tif",  # too shallow
    "nc/anderson/ams_1960/frames/georef/19600101_1-2.jpg",  # not a TIFF in an image folder
    "nc/anderson/ams_1960/frames/raw/19600101_1-2.tif",  # no such stage
    "nc/anderson/ams_1960/photos/georef/19600101_1-2.tif",  # no such type
    "nc/Anderson/ams_1960/frames/georef/19600101_1-2.tif",  # county in upper case
    "nc/anderson/ams_1960/frames/georef/a name with spaces.tif",
    "rgb/anderson/ams_1960/frames/georef/19600101_1-2.tif",  # no such band
    "19600101_1-2.tif",  # at the top of the bucket
    "geojson/old.geojson",
]


def test_objects_outside_the_layout_are_reported_and_never_touched():
    findings = found(inputs(*map(obj, LAYOUT_VIOLATIONS)))
    assert set(findings) == set(LAYOUT_VIOLATIONS)
    assert {(f.kind, f.action, f.target) for f in findings.values()} == {
        (maintenance.OUTSIDE_LAYOUT, maintenance.REPORT, "")}
    assert "must end in .tif or .TIF" in findings[LAYOUT_VIOLATIONS[2]].reason
    assert "expected 6 path parts, found 7" in findings[LAYOUT_VIOLATIONS[0]].reason


def test_objects_under_cog_that_ls4_did_not_write_are_reported():
    stray = GOOD.prefix("cog") + "readme.txt"
    findings = found(inputs(obj(stray), obj(GOOD.tile_index_prefix + "notes.txt")))
    assert {f.kind for f in findings.values()} == {maintenance.NOT_LS4_OUTPUT}
    assert {f.action for f in findings.values()} == {maintenance.REPORT}
    assert set(findings) == {stray, GOOD.tile_index_prefix + "notes.txt"}


def test_nothing_under_a_band_prefix_is_ever_moved_or_deleted():
    everything = inputs(*map(obj, LAYOUT_VIOLATIONS), obj(GOOD.cog_key("orphan")),
                        obj(GONE.prefix("scanned") + "USDA_1951_1.tif"), obj(GONE.mapfile_key),
                        tables=(GOOD.table, GONE.table),
                        public={GOOD.prefix("scanned") + "19600101_1-1.tif": False})
    for delete in (False, True):
        acted_on = [f.key for f in decide(everything, now=NOW, delete=delete) if f.action != maintenance.REPORT]
        assert acted_on and not [key for key in acted_on if key.startswith(("bw/", "nc/"))]


def test_old_intermediates_are_deleted_recent_ones_left_to_their_run():
    old = GOOD.work_key("19600101_1-1", '"abc"', "compressed.tif")
    recent = GOOD.work_key("19600101_1-2", "def", "compressed.tif")
    findings = found(inputs(obj(old, when=NOW - maintenance.WORK_KEPT - timedelta(hours=1)),
                            obj(recent, when=NOW - maintenance.WORK_KEPT + timedelta(hours=1))))
    assert set(findings) == {old}
    assert (findings[old].kind, findings[old].action, findings[old].collection) == \
        (maintenance.ORPHAN_INTERMEDIATE, maintenance.DELETE, GOOD.name)
    assert not findings[old].notify  # maintenance deals with it: nobody needs to act


def test_a_cog_whose_upload_is_gone_is_reported():
    cog = GOOD.cog_key("19600101_1-9")
    findings = found(inputs(obj(cog, "c9")))
    assert {k: (f.kind, f.action, f.collection, f.etag) for k, f in findings.items()} == {
        cog: (maintenance.ORPHAN_COG, maintenance.REPORT, GOOD.name, "c9")}


def test_scans_nobody_may_read_are_reported():
    scan = GOOD.prefix("scanned") + "19600101_1-1.tif"
    assert found(inputs(public={scan: True})) == {}
    assert found(inputs()) == {}  # not looked at (deleted since the listing): nothing to say
    findings = found(inputs(public={scan: False}))
    assert (findings[scan].kind, findings[scan].action, findings[scan].collection) == \
        (maintenance.SCAN_NOT_PUBLIC, maintenance.REPORT, GOOD.name)


def test_scan_keys_are_the_scans_in_the_layout():
    assert maintenance.scan_keys(good_collection() + [obj(GOOD.prefix("scanned") + "notes.txt")]) == [
        GOOD.prefix("scanned") + "19600101_1-1.tif"]


def report(dry_run=False) -> Report:
    given = inputs(obj(GONE.mapfile_key), obj("mapfiles/notes.txt"), *map(obj, LAYOUT_VIOLATIONS[:3]),
                   tables=(GOOD.table, GONE.table))
    return Report(NOW, dry_run, {"objects": 17, "tables": 2, "scans": 1}, decide(given, now=NOW))


def test_the_summary_counts_findings_by_collection_and_kind():
    text = maintenance.summary(report())
    assert text.splitlines()[0] == "ls4 maintenance, 2026-12-03 04:00 UTC"
    assert "checked 17 objects, 2 tables, 1 scans" in text
    assert f"{GONE.name}:\n  {maintenance.ORPHAN_MAPFILE}: 1 (1 moved to quarantine)" in text
    assert f"  {maintenance.ORPHAN_TABLE}: 1 (1 moved to the quarantine schema)" in text
    assert f"bucket:\n  {maintenance.NOT_A_MAPFILE}: 1 (1 moved to quarantine)" in text
    assert f"  {maintenance.OUTSIDE_LAYOUT}: 3 (3 reported)" in text
    assert text.splitlines()[-1] == (f"total: 1 {maintenance.ORPHAN_MAPFILE}, 1 {maintenance.NOT_A_MAPFILE}, "
                                     f"1 {maintenance.ORPHAN_TABLE}, 3 {maintenance.OUTSIDE_LAYOUT}")


def test_a_dry_run_summary_says_what_would_be_done():
    text = maintenance.summary(report(dry_run=True))
    assert "(dry run: nothing was changed)" in text.splitlines()[0]
    assert f"{maintenance.ORPHAN_MAPFILE}: 1 (1 would be moved to quarantine)" in text
    assert "3 reported" in text


def test_a_long_list_is_cut_short_in_the_summary_but_counted_in_full():
    scans = [GOOD.prefix("scanned") + f"19600101_2-{i}.tif" for i in range(25)]
    given = inputs(*map(obj, scans), public={scan: False for scan in scans})
    text = maintenance.summary(Report(NOW, False, {}, decide(given, now=NOW)))
    assert f"{maintenance.SCAN_NOT_PUBLIC}: 25 (25 reported)" in text
    assert f"... and {25 - maintenance.LISTED} more" in text


def test_the_report_as_a_dict_is_json_with_counts_by_collection():
    data = json.loads(json.dumps(report().to_dict()))
    assert data["counts"] == {
        "": {maintenance.NOT_A_MAPFILE: 1, maintenance.OUTSIDE_LAYOUT: 3},
        GONE.name: {maintenance.ORPHAN_MAPFILE: 1, maintenance.ORPHAN_TABLE: 1}}
    assert data["time"] == "2026-12-03T04:00:00+00:00" and data["dry_run"] is False
    assert len(data["findings"]) == 6 and data["failed"] == {}
    assert {"kind", "key", "reason", "collection", "action", "target", "etag"} == set(data["findings"][0])


class RecordingS3:
    """What apply() asks of S3; copying ``fail_key`` fails."""

    def __init__(self, fail_key=""):
        self.calls, self.fail_key = [], fail_key

    def copy_object(self, **kwargs):
        if kwargs["CopySource"]["Key"] == self.fail_key:
            raise RuntimeError("precondition failed")
        self.calls.append(("copy", kwargs["CopySource"]["Key"], kwargs["Key"], kwargs["CopySourceIfMatch"]))

    def delete_object(self, Bucket, Key):
        self.calls.append(("delete", Key))


def test_apply_copies_then_deletes_and_goes_on_past_a_failure():
    findings = [Finding(maintenance.ORPHAN_MAPFILE, "mapfiles/a.map", "r", "a", maintenance.MOVE,
                        "quarantine/s/mapfiles/a.map", "ea"),
                Finding(maintenance.NOT_A_MAPFILE, "mapfiles/b.txt", "r", "", maintenance.MOVE,
                        "quarantine/s/mapfiles/b.txt", "eb"),
                Finding(maintenance.ORPHAN_INTERMEDIATE, "ls4-work/c", "r", "", maintenance.DELETE),
                Finding(maintenance.OUTSIDE_LAYOUT, "nc/x.tif", "r")]
    done = Report(NOW, False, {}, findings)
    s3 = RecordingS3(fail_key="mapfiles/a.map")
    maintenance.apply(done, s3, engine=None, bucket="ls4")
    assert s3.calls == [("copy", "mapfiles/b.txt", "quarantine/s/mapfiles/b.txt", '"eb"'),
                        ("delete", "mapfiles/b.txt"), ("delete", "ls4-work/c")]
    assert done.failed == {"mapfiles/a.map": "RuntimeError: precondition failed"}
    assert "[FAILED: RuntimeError: precondition failed]" in maintenance.summary(done)


def test_each_notice_says_what_became_of_its_finding():
    done = report()
    done.failed["mapfiles/notes.txt"] = "ClientError: AccessDenied"
    notices = {notice.key: notice for notice in done.notices()}
    assert notices[GONE.mapfile_key].reason.endswith(
        f"so its WMS serves nothing. It was moved to quarantine/{STAMP}/{GONE.mapfile_key}")
    assert notices[GONE.table].reason.endswith(
        f"It was moved to {maintenance.QUARANTINE_SCHEMA}.{GONE.table}_{STAMP}")
    assert notices["mapfiles/notes.txt"].reason.endswith(
        f"It could not be moved to quarantine/{STAMP}/mapfiles/notes.txt: ClientError: AccessDenied")
    assert notices[LAYOUT_VIOLATIONS[0]].reason.endswith("move it to the right folder. Nothing was changed")
    dry = {notice.key: notice for notice in report(dry_run=True).notices()}
    assert dry[GONE.mapfile_key].reason.endswith(f"Dry run: it would be moved to quarantine/{STAMP}/{GONE.mapfile_key}")


def test_many_findings_of_a_kind_in_a_collection_make_one_notice_and_quiet_ones_none():
    scans = [GOOD.prefix("scanned") + f"19600101_2-{i}.tif" for i in range(maintenance.NOTIFIED_EACH + 1)]
    old = obj(GOOD.work_key("19600101_1-1", "abc", "compressed.tif"), when=LONG_AGO)
    given = inputs(old, *map(obj, scans), public={scan: False for scan in scans})
    notices = Report(NOW, False, {}, decide(given, now=NOW)).notices()
    assert [(n.kind, n.key, n.collection) for n in notices] == [(maintenance.SCAN_NOT_PUBLIC, scans[0], GOOD.name)]
    assert notices[0].reason.startswith(f"{len(scans)} of them in {GOOD.name}, e.g. {scans[0]}, ")
    # The same objects make the same notice (told once); one more, another.
    again = Report(NOW, False, {}, decide(given, now=NOW)).notices()
    one_more = [*scans, GOOD.prefix("scanned") + "19600101_3-1.tif"]
    more = inputs(old, *map(obj, one_more), public={scan: False for scan in one_more})
    assert again[0].etag == notices[0].etag != Report(NOW, False, {}, decide(more, now=NOW)).notices()[0].etag
    few = inputs(*map(obj, scans[:2]), public={scan: False for scan in scans[:2]})
    assert [n.key for n in Report(NOW, False, {}, decide(few, now=NOW)).notices()] == scans[:2]
