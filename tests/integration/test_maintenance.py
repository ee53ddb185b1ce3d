"""The daily maintenance DAG (``ls4_maintenance``) on the real S3 emulator, PostGIS and MapServer.

SPEC, scheduled jobs: every mapfile has its table and every table its
mapfile; non-mapfiles in ``mapfiles/`` and orphans are dealt with and
reported; anything outside the rigid layout is found and reported without
losing anyone's upload. Planted here beside a processed collection: an
orphan mapfile, a text file in ``mapfiles/``, the table of a collection with
no upload left, uploads outside the layout, a scan nobody may read, and an
intermediate no run will come back for. One dry run, then two real runs.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from sqlalchemy import text

from ls4_ops import maintenance, mapfile, tileindex
from ls4_ops.layout import BAND_PREFIXES, QUARANTINE_PREFIX, parse_key
from tests.integration import pipeline
from tests.integration.test_tileindex import drop, engine, row

pytestmark = pytest.mark.usefixtures("airflow_db")

GOOD = parse_key("nc/maintville/usda_1962/frames/georef/x.tif").collection
ORPHAN = parse_key("nc/ghostville/usda_1948/frames/georef/x.tif").collection  # a mapfile, nothing else
GONE = parse_key("bw/goneville/usda_1949/frames/georef/x.tif").collection  # a table, no upload left
FRAME = f"{GOOD.prefix('georef')}19620101_1-1.tif"
SCAN = f"{GOOD.prefix('scanned')}19620101_1-1.tif"
PRIVATE_SCAN = f"{GOOD.prefix('scanned')}19620101_1-2.tif"
STRAY = "mapfiles/maintville-notes.txt"
VIOLATIONS = [f"{GOOD.prefix('georef')}extra/19620101_1-3.tif",  # one folder too deep
              f"{GOOD.prefix('georef')}19620101_1-4.jpg"]  # not a TIFF in an image folder
INTERMEDIATE = GOOD.work_key("19620101_1-9", "0123abcd", "compressed.tif")


def listing(prefixes=("",)) -> dict[str, str]:
    """Key -> ETag of everything under ``prefixes``."""
    return {obj.key: obj.etag for prefix in prefixes
            for obj in maintenance.list_bucket(pipeline.s3(), pipeline.bucket()) if obj.key.startswith(prefix)}


def content(key: str) -> bytes:
    return pipeline.s3().get_object(Bucket=pipeline.bucket(), Key=key)["Body"].read()


def put(key: str, body: bytes) -> None:
    pipeline.s3().put_object(Bucket=pipeline.bucket(), Key=key, Body=body)


def public_tables() -> set[str]:
    with engine().connect() as connection:
        return maintenance.catalogued_tables(connection)[0]


def quarantined_tables() -> dict[str, int]:
    """Tables in the quarantine schema and their rows."""
    with engine().connect() as connection:
        names = connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :schema"),
                                   {"schema": maintenance.QUARANTINE_SCHEMA}).scalars().all()
        return {name: connection.execute(text(f'SELECT count(*) FROM {maintenance.QUARANTINE_SCHEMA}."{name}"'))
                .scalar() for name in names}


def maintain(**conf) -> dict:
    """Run the maintenance DAG; return what its task returned (its XCom)."""
    run = pipeline.load_dags("ls4_maintenance").dag.test(run_conf=conf or None)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    return pipeline.returned(run, "maintain")


def ours(summary: dict) -> dict[str, dict]:
    """The findings about what this module planted, by key."""
    planted = {ORPHAN.mapfile_key, STRAY, GONE.table, PRIVATE_SCAN, INTERMEDIATE, *VIOLATIONS}
    return {finding["key"]: finding for finding in summary["findings"] if finding["key"] in planted}


@pytest.fixture(scope="module")
def runs(services, tmp_path_factory):
    """The bucket and database before, after a dry run and after a real run, and both runs' summaries.
    On a bucket with ACLs and no policy, where a scan can be private (ls4's policy makes every scan public)."""
    with pipeline.acls_enabled():
        yield from _runs(tmp_path_factory)


def _runs(tmp_path_factory):
    made = pipeline.upload_row(tmp_path_factory.mktemp("maintenance"), [FRAME], (620_000.0, 3_350_000.0), (300, 200))
    pipeline.s3().upload_file(made[FRAME], pipeline.bucket(), SCAN, ExtraArgs={"ACL": "public-read"})
    pipeline.process(GOOD)

    orphan_mapfile = mapfile.render(mapfile.build(ORPHAN, [0, 0, 100, 100], wms_url="http://wms/",
                                                  pg_service="ls4", generation=1)).encode()
    put(ORPHAN.mapfile_key, orphan_mapfile)
    put(STRAY, b"notes someone left beside the mapfiles")
    for key in VIOLATIONS:
        put(key, b"II*\x00 an upload in the wrong place")
    put(PRIVATE_SCAN, b"II*\x00 a scan nobody may read")
    put(INTERMEDIATE, b"II*\x00 left by a run that failed")
    drop(GONE)
    with engine().begin() as connection:
        tileindex.upsert(connection, GONE, [row(GONE, "19490101_1"), row(GONE, "19490101_2", x=100)])
        # Unchanged for a day: no run of it can be under way.
        connection.execute(text(f"UPDATE {tileindex.CATALOG} SET updated = now() - interval '1 day' "
                                "WHERE table_name = :table"), {"table": GONE.table})
    pipeline.wait_for_mapfile(ORPHAN)

    uploads = {key: content(key) for key in listing([GOOD.prefix("georef"), GOOD.prefix("scanned")])}
    before = {"bucket": listing(), "tables": public_tables(), "quarantined": quarantined_tables()}
    # Nothing in a test session is days old: here every intermediate is past its time.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(maintenance, "WORK_KEPT", timedelta(0))
        notified_before = len(pipeline.notifications())
        dry = maintain(dry_run=True)
        after_dry = {"bucket": listing(), "tables": public_tables(), "quarantined": quarantined_tables(),
                     "notified": pipeline.notifications()[notified_before:]}
        real = maintain()
    notified_by_real = pipeline.notifications()[notified_before + len(after_dry["notified"]):]
    after = {"bucket": listing(), "tables": public_tables(), "quarantined": quarantined_tables(),
             "notified": notified_by_real}
    again = maintain()
    after["notified_again"] = pipeline.notifications()[notified_before + len(after_dry["notified"])
                                                       + len(notified_by_real):]
    yield {"before": before, "dry": dry, "after_dry": after_dry, "real": real, "after": after, "again": again,
           "uploads": uploads, "orphan_mapfile": orphan_mapfile}

    for key in [*VIOLATIONS, PRIVATE_SCAN, *(k for k in listing([QUARANTINE_PREFIX]) if "maintville" in k
                                            or ORPHAN.name in k)]:
        pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=key)
    with engine().begin() as connection:
        for name in quarantined_tables():
            if name.startswith(GONE.table):
                connection.execute(text(f'DROP TABLE {maintenance.QUARANTINE_SCHEMA}."{name}"'))
    drop(GONE)


def test_a_dry_run_changes_nothing_and_notifies_no_one(runs):
    assert runs["after_dry"]["bucket"] == runs["before"]["bucket"]
    assert runs["after_dry"]["tables"] == runs["before"]["tables"]
    assert runs["after_dry"]["quarantined"] == runs["before"]["quarantined"]
    assert runs["after_dry"]["notified"] == []
    assert runs["dry"]["dry_run"] is True
    # ... yet it says what a run would do.
    def decided(summary):
        return {key: (finding["kind"], finding["action"]) for key, finding in ours(summary).items()}

    assert decided(runs["dry"]) == decided(runs["real"])
    assert len(decided(runs["dry"])) == 7


def test_the_orphan_mapfile_is_moved_to_quarantine_byte_for_byte(runs):
    finding = ours(runs["real"])[ORPHAN.mapfile_key]
    assert (finding["kind"], finding["action"]) == (maintenance.ORPHAN_MAPFILE, maintenance.MOVE)
    assert finding["target"].startswith(QUARANTINE_PREFIX) and finding["target"].endswith(ORPHAN.mapfile_key)
    assert ORPHAN.mapfile_key not in runs["after"]["bucket"]
    assert content(finding["target"]) == runs["orphan_mapfile"]
    notices = [n for n in runs["after"]["notified"] if n["key"] == ORPHAN.mapfile_key]
    assert [n["reason"].rsplit(". ", 1)[-1] for n in notices] == [f"It was moved to {finding['target']}"]
    # ... and the MapServer host no longer serves it.
    path = os.path.join(os.environ["LS4_MAPFILE_DIR"], f"{ORPHAN.name}.map")
    pipeline.wait_until(f"{path} to leave the MapServer host", lambda: not os.path.exists(path), 30, interval=0.5)


def test_an_object_in_mapfiles_that_is_not_a_mapfile_is_moved_to_quarantine(runs):
    finding = ours(runs["real"])[STRAY]
    assert (finding["kind"], finding["action"]) == (maintenance.NOT_A_MAPFILE, maintenance.MOVE)
    assert STRAY not in runs["after"]["bucket"]
    assert content(finding["target"]) == b"notes someone left beside the mapfiles"


def test_the_table_of_a_collection_without_uploads_goes_to_the_quarantine_schema_rows_and_all(runs):
    finding = ours(runs["real"])[GONE.table]
    assert (finding["kind"], finding["action"]) == (maintenance.ORPHAN_TABLE, maintenance.MOVE_TABLE)
    assert GONE.table in runs["before"]["tables"] and GONE.table not in runs["after"]["tables"]
    assert runs["after"]["quarantined"][finding["target"]] == 2


def test_layout_violations_and_a_private_scan_are_reported_not_touched(runs):
    findings = ours(runs["real"])
    for key in VIOLATIONS:
        assert (findings[key]["kind"], findings[key]["action"]) == (maintenance.OUTSIDE_LAYOUT, maintenance.REPORT)
    assert (findings[PRIVATE_SCAN]["kind"], findings[PRIVATE_SCAN]["action"]) == \
        (maintenance.SCAN_NOT_PUBLIC, maintenance.REPORT)
    notified = {(n["subject"], n["key"]) for n in runs["after"]["notified"]}
    assert {(maintenance.OUTSIDE_LAYOUT, key) for key in VIOLATIONS} <= notified
    assert (maintenance.SCAN_NOT_PUBLIC, PRIVATE_SCAN) in notified
    assert (maintenance.ORPHAN_MAPFILE, ORPHAN.mapfile_key) in notified
    assert (maintenance.ORPHAN_INTERMEDIATE, INTERMEDIATE) not in notified  # ls4 deals with those itself


def test_every_upload_is_still_there_byte_for_byte(runs):
    before = {key: etag for key, etag in runs["before"]["bucket"].items() if key.startswith(BAND_PREFIXES)}
    after = {key: etag for key, etag in runs["after"]["bucket"].items() if key.startswith(BAND_PREFIXES)}
    assert after == before
    assert {key: content(key) for key in runs["uploads"]} == runs["uploads"]
    assert set(VIOLATIONS) | {FRAME, SCAN, PRIVATE_SCAN} <= set(runs["uploads"])


def test_the_processed_collection_keeps_its_mapfile_table_and_page(runs):
    for key in (GOOD.mapfile_key, GOOD.preview_key, GOOD.cog_key("19620101_1-1"), GOOD.tile_index_zip_key):
        assert runs["after"]["bucket"][key] == runs["before"]["bucket"][key]
    assert GOOD.table in runs["after"]["tables"]
    with engine().connect() as connection:
        assert tileindex.summary(connection, GOOD).count == 1
    assert [f["key"] for f in runs["real"]["findings"] if f["collection"] == GOOD.name] == [INTERMEDIATE, PRIVATE_SCAN]


def test_an_old_intermediate_is_deleted(runs):
    finding = ours(runs["real"])[INTERMEDIATE]
    assert (finding["kind"], finding["action"], finding["collection"]) == \
        (maintenance.ORPHAN_INTERMEDIATE, maintenance.DELETE, GOOD.name)
    assert INTERMEDIATE in runs["after_dry"]["bucket"] and INTERMEDIATE not in runs["after"]["bucket"]


def test_the_summary_counts_findings_by_collection(runs):
    counts = runs["real"]["counts"]
    assert counts[GOOD.name] == {maintenance.ORPHAN_INTERMEDIATE: 1, maintenance.SCAN_NOT_PUBLIC: 1}
    assert counts[ORPHAN.name] == {maintenance.ORPHAN_MAPFILE: 1}
    assert counts[GONE.name] == {maintenance.ORPHAN_TABLE: 1}
    assert counts[""][maintenance.OUTSIDE_LAYOUT] >= len(VIOLATIONS)
    assert counts[""][maintenance.NOT_A_MAPFILE] >= 1
    assert runs["real"]["failed"] == {} and runs["real"]["dry_run"] is False
    assert runs["real"]["checked"]["objects"] == len(runs["after_dry"]["bucket"])


def test_the_next_run_finds_what_is_left_and_tells_no_one_again(runs):
    left = ours(runs["again"])
    assert {key: finding["kind"] for key, finding in left.items()} == {
        **{key: maintenance.OUTSIDE_LAYOUT for key in VIOLATIONS}, PRIVATE_SCAN: maintenance.SCAN_NOT_PUBLIC}
    assert [n for n in runs["after"]["notified_again"] if n["key"] in left] == []
