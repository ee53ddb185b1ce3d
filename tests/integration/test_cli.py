"""The installed ``ls4`` command against the real local services and a real Airflow API server.

A collection is processed with ``dag.test()`` (one good frame), then a bad
upload fails in a second run; the command runs as a subprocess from another
directory, without PYTHONPATH, as an operator runs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from datetime import datetime, timezone

import pytest

from include import local_stack
from ls4_ops import ledger
from ls4_ops.layout import parse_key
from ls4_ops.mapfile import mapfile_url
from include.synthetic import make_not_georeferenced
from tests.integration import pipeline
from tests.integration.api_server import api_server, serialize_dags

GOOD = "nc/cliville/tops_1975/frames/georef/19750312_4-1.tif"
BAD = "nc/cliville/tops_1975/frames/georef/19750312_4-2.tif"
COLLECTION = parse_key(GOOD).collection


def ls4(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``.venv/bin/ls4`` as an operator runs it: from another directory, no PYTHONPATH."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(env)
    return subprocess.run([os.path.join(os.environ["LS4_VENV"], "bin", "ls4"), *args], env=environ, cwd="/",
                          capture_output=True, text=True, timeout=120)


def ls4_json(*args: str):
    result = ls4(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def planted(services, airflow_db, tmp_path_factory):
    """A processed good frame and a failed upload in one collection, its WMS served, and an
    Airflow API server that knows the collection's DAG."""
    folder = tmp_path_factory.mktemp("cli")
    pipeline.upload_row(folder, [GOOD], (630_000.0, 3_349_000.0), (300, 200))
    pipeline.process(COLLECTION)
    bad = str(folder / "bad.tif")
    make_not_georeferenced(bad)
    pipeline.upload(bad, BAD)
    assert pipeline.run_dag(COLLECTION.dag_id).state == "failed"  # the report names the bad upload
    pipeline.wait_for_mapfile(COLLECTION)
    serialize_dags()
    with api_server():
        yield
    _forget_runs_left_queued()


def _forget_runs_left_queued() -> None:
    """Runs this module queued (nothing ran them: no scheduler) would start under the scheduler of
    a later module."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == COLLECTION.dag_id, DagRun.state == "queued"))


def test_status_counts_frames_and_failed_upload_with_last_run_and_wms(planted):
    (status,) = ls4_json("status", COLLECTION.name)
    assert (status["frames"], status["pending"], status["failed"]) == (1, 0, 1)
    assert status["last_run"]["state"] == "failed" and status["has_dag"]
    assert status["wms_url"] == mapfile_url(COLLECTION, os.environ["LS4_WMS_URL"])
    table = ls4("status")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["COLLECTION", "FRAMES", "PENDING", "FAILED", "LAST", "RUN", "WMS"]
    row = next(line.split() for line in rows if line.startswith(COLLECTION.name + " "))
    assert row[1:5] == ["1", "0", "1", "failed"] and row[-1] == status["wms_url"]


def test_status_of_an_unknown_collection_says_so_in_one_line(planted):
    result = ls4("status", "nowhere_ams_1960_frames")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no collection nowhere_ams_1960_frames" in result.stderr


def test_where_a_good_upload_is_served(planted):
    good = ls4_json("where", f"s3://{os.environ['LS4_BUCKET']}/{GOOD}")
    assert good["stopped_at"] is None
    assert [(s["name"], s["done"]) for s in good["stages"]] == [
        ("uploaded", True), ("not failed", True), ("cog", True), ("indexed", True), ("served", True)]
    assert [(r["stage"], r["outcome"]) for r in good["history"]] == [
        ("compress", "success"), ("overviews", "success"), ("cog", "success")]
    text = ls4("where", GOOD).stdout
    assert text.splitlines()[0] == f"{GOOD}: served by the WMS"
    assert "what ls4 did with it (the run ledger):" in text


def test_where_a_bad_upload_stops_at_its_failure_with_the_reason(planted):
    bad = ls4_json("where", BAD)
    assert bad["stopped_at"] == "not failed"
    reasons = {s["name"]: s["reason"] for s in bad["stages"]}
    assert "not georeferenced" in reasons["not failed"]
    assert f"ls4 reprocess {COLLECTION.name} {BAD}" in reasons["not failed"]
    assert "without this frame" in reasons["served"]
    assert [(r["stage"], r["outcome"]) for r in bad["history"]][0] == ("compress", "bad upload")
    assert "not georeferenced" in bad["history"][0]["reason"]


def test_where_a_cog_follows_the_upload_it_was_made_from(planted):
    result = ls4("where", parse_key(GOOD).cog_key)
    assert result.returncode == 0
    assert result.stdout.splitlines()[:2] == [f"{parse_key(GOOD).cog_key} is the COG of {GOOD}:",
                                              f"{GOOD}: served by the WMS"]


def test_failures_lists_the_bad_upload_with_its_reason_and_time(planted):
    failures = ls4_json("failures", "--since", "1h")
    (bad,) = [f for f in failures if f["key"] == BAD]
    assert "not georeferenced" in bad["reason"]
    assert datetime.now(timezone.utc).timestamp() - datetime.fromisoformat(bad["failed"]).timestamp() < 3600
    assert not [f for f in failures if f["key"] == GOOD]
    future = ls4("failures", "--since", "2999-01-01")
    assert future.returncode == 0 and future.stdout.startswith("no failed upload recorded since 2999-01-01")


def test_reprocess_queues_a_run_whose_conf_the_collection_dag_retries_the_named_upload_with(planted):
    queued = ls4_json("reprocess", COLLECTION.name, os.path.basename(BAD))
    assert queued["state"] == "queued" and queued["conf"] == {"keys": [os.path.basename(BAD)]}
    (status,) = ls4_json("status", COLLECTION.name)
    assert status["last_run"]["run_id"] == queued["run_id"]
    # The DAG itself takes that conf: the failed upload is tried again (and fails again), which a
    # run without keys would not do; the same version's problem is not told again.
    notified = len(pipeline.notifications())
    with local_stack.postgis_engine().connect() as connection:
        tried = len(ledger.history(connection, BAD))
    run = pipeline.run_dag(COLLECTION.dag_id, **queued["conf"])
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan"] == "success" and states["frame.compress"] == "failed"
    with local_stack.postgis_engine().connect() as connection:
        assert [r.outcome for r in ledger.history(connection, BAD)[tried:]] == [ledger.BAD_UPLOAD]
    assert [n for n in pipeline.notifications()[notified:] if n["key"] == BAD] == []
    forced = ls4_json("reprocess", COLLECTION.name, "--force")
    assert forced["conf"] == {"force": True} and forced["run_id"] != queued["run_id"]


def test_reprocess_of_a_collection_without_dag_fails_in_one_line(planted):
    result = ls4("reprocess", "nowhere_ams_1960_frames")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "not in the registry" in result.stderr


def test_maintenance_dry_run_reports_and_changes_nothing(planted):
    def listing():
        return {(o["Key"], o["ETag"]) for page in pipeline.s3().get_paginator("list_objects_v2").paginate(
            Bucket=pipeline.bucket()) for o in page.get("Contents", [])}

    before = listing()
    report = ls4_json("maintenance", "--dry-run")
    assert report["dry_run"] is True and report["checked"]["objects"] == len(before)
    assert listing() == before
    text = ls4("maintenance", "--dry-run")
    assert text.returncode == 0 and "(dry run: nothing was changed)" in text.stdout.splitlines()[0]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("service, env, commands", [
    ("S3", lambda port: {"LS4_S3_ENDPOINT": f"http://127.0.0.1:{port}"},
     [["status"], ["where", GOOD], ["maintenance", "--dry-run"]]),
    ("PostGIS", lambda port: {"LS4_PG_PORT": str(port)},
     [["status"], ["where", GOOD], ["failures"], ["maintenance", "--dry-run"]]),
    ("the Airflow API", lambda port: {"LS4_AIRFLOW_URL": f"http://127.0.0.1:{port}"},
     [["status"], ["reprocess", COLLECTION.name]]),
    ("MapServer (WMS)", lambda port: {"LS4_WMS_URL": f"http://127.0.0.1:{port}/wms/"},
     [["where", GOOD]]),
])
def test_a_service_down_is_named_in_one_line_with_how_to_start_it(planted, service, env, commands):
    port = closed_port()
    for command in commands:
        started = time.monotonic()
        result = ls4(*command, **env(port))
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert result.stdout == "" and result.stderr.count("\n") == 1, (command, result.stderr)
        assert f"cannot reach {service} at " in result.stderr and str(port) in result.stderr
        assert "make run" in result.stderr and "include/stack/stack.sh start" in result.stderr
        assert "Traceback" not in result.stderr
        assert time.monotonic() - started < 30
