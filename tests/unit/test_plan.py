from datetime import datetime, timezone

from ls4_ops.layout import parse_key
from ls4_ops.plan import S3Object, plan_uploads

PREFIX = "nc/anderson/tops_1975/frames/georef/"
COLLECTION = parse_key(PREFIX + "x.tif").collection
COG = "nc/anderson/tops_1975/frames/cog/"


def obj(name, etag="e1", size=10, minute=0):
    return S3Object(PREFIX + name, etag, size, datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc))


def test_new_and_changed_uploads_are_planned_unchanged_are_not():
    georef = [obj("a.tif", "e1"), obj("b.tif", "e2"), obj("c.TIF", "e3")]
    processed = {COG + "a.tif": "e1", COG + "b.tif": "old"}
    plan = plan_uploads(COLLECTION, georef, processed)
    assert [item["key"] for item in plan.todo] == [PREFIX + "b.tif", PREFIX + "c.TIF"]
    assert plan.todo[1] == {"key": PREFIX + "c.TIF", "etag": "e3", "cog_key": COG + "c.tif"}
    assert plan.up_to_date == [PREFIX + "a.tif"]
    assert plan.problems == []


def test_force_and_keys_select_what_is_reprocessed():
    georef = [obj("a.tif"), obj("b.tif")]
    processed = {COG + "a.tif": "e1", COG + "b.tif": "e1"}
    assert plan_uploads(COLLECTION, georef, processed).todo == []
    assert len(plan_uploads(COLLECTION, georef, processed, force=True).todo) == 2
    only = plan_uploads(COLLECTION, georef, processed, force=True, only_keys=[PREFIX + "b.tif"])
    assert [item["key"] for item in only.todo] == [PREFIX + "b.tif"]


def test_bad_uploads_are_reported_and_never_block_the_rest():
    georef = [obj("good.tif"), obj("empty.tif", size=0), obj("bad name.tif"),
              S3Object("nc/anderson/tops_1975/frames/georef/sub/x.tif", "e", 5)]
    plan = plan_uploads(COLLECTION, georef, {})
    assert [item["key"] for item in plan.todo] == [PREFIX + "good.tif"]
    reasons = dict(plan.problems)
    assert "empty (0 bytes)" in reasons[PREFIX + "empty.tif"]
    assert "no spaces" in reasons[PREFIX + "bad name.tif"]
    assert "6 path parts" in reasons["nc/anderson/tops_1975/frames/georef/sub/x.tif"]


def test_same_stem_in_two_cases_uses_the_newer_upload_and_reports_the_other():
    georef = [obj("a.TIF", "new", minute=5), obj("a.tif", "old", minute=1)]
    plan = plan_uploads(COLLECTION, georef, {})
    assert plan.todo == [{"key": PREFIX + "a.TIF", "etag": "new", "cog_key": COG + "a.tif"}]
    assert [key for key, _ in plan.problems] == [PREFIX + "a.tif"]


def test_unknown_requested_key_is_reported():
    plan = plan_uploads(COLLECTION, [obj("a.tif")], {}, only_keys=[PREFIX + "zzz.tif"])
    assert plan.todo == []
    assert plan.problems[0][0] == PREFIX + "zzz.tif"
