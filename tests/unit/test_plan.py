from datetime import datetime, timezone

import pytest

from ls4_ops.layout import parse_key
from ls4_ops.plan import RunRequest, S3Object, plan_uploads, run_request

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
    georef = [obj("a.tif"), obj("b.tif"), obj("c.tif")]
    processed = {COG + name: "e1" for name in ("a.tif", "b.tif", "c.tif")}
    assert plan_uploads(COLLECTION, georef, processed).todo == []
    assert len(plan_uploads(COLLECTION, georef, processed, RunRequest(force=True)).todo) == 3
    # Naming up-to-date uploads is enough to reprocess them; force adds nothing then.
    for force in (False, True):
        only = plan_uploads(COLLECTION, georef, processed, RunRequest((PREFIX + "b.tif", PREFIX + "c.tif"), force))
        assert [item["key"] for item in only.todo] == [PREFIX + "b.tif", PREFIX + "c.tif"]
        assert only.up_to_date == [] and only.not_found == []


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


def test_requested_keys_that_cannot_be_processed_are_named_with_the_reason():
    georef = [obj("a.tif"), obj("empty.tif", size=0), obj("d.TIF", minute=5), obj("d.tif", minute=1)]
    asked = (PREFIX + "zzz.tif", PREFIX + "empty.tif", PREFIX + "d.tif", PREFIX + "a.tif")
    plan = plan_uploads(COLLECTION, georef, {}, RunRequest(asked))
    assert [item["key"] for item in plan.todo] == [PREFIX + "a.tif"]
    reasons = dict(plan.not_found)
    assert list(reasons) == list(asked[:3])
    assert "no such georef upload" in reasons[PREFIX + "zzz.tif"]
    assert "0 bytes" in reasons[PREFIX + "empty.tif"]
    assert "newer upload" in reasons[PREFIX + "d.tif"]


def test_folder_markers_are_neither_uploads_nor_problems():
    plan = plan_uploads(COLLECTION, [S3Object(PREFIX, "e0", 0), obj("a.tif")], {})
    assert [item["key"] for item in plan.todo] == [PREFIX + "a.tif"]
    assert plan.problems == []


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
