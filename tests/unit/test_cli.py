"""The ``ls4`` command's decisions and parsing, and its Airflow REST client against a stand-in HTTP server."""

from __future__ import annotations

import argparse
import json
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ls4_ops import cli
from ls4_ops.airflow_api import AirflowApi, AirflowApiError, AirflowUnreachable
from ls4_ops.layout import parse_key
from ls4_ops.plan import CogSource, S3Object
from ls4_ops.tileindex import IndexedCog
from ls4_ops.failures import Failure
from ls4_ops.upload_status import UploadFacts, collection_counts, stopped_at, where

GEOREF = "nc/anderson/tops_1975/frames/georef/"
KEY = GEOREF + "19750312_4-1.tif"
UPLOAD = parse_key(KEY)
COLLECTION = UPLOAD.collection
WMS = "http://wms/wms/"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


def obj(name: str, etag: str = "v1", size: int = 100, minute: int = 0) -> S3Object:
    return S3Object(GEOREF + name, etag, size, datetime(2026, 12, 1, 8, minute, tzinfo=timezone.utc))


# --- argument parsing ------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["status", "where", "reprocess", "failures"])
def test_each_command_has_help_that_describes_it(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ls4 {command}") and "--json" in out and len(out.splitlines()) > 6


def test_a_command_is_required():
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args([])
    assert exit_.value.code == 2


def test_arguments_of_each_command():
    parse = cli.build_parser().parse_args
    assert parse(["status"]).collection is None
    assert parse(["status", "x_ams_1960_frames", "--json"]).json
    assert parse(["where", "s3://ls4/" + KEY]).key == "s3://ls4/" + KEY
    reprocess = parse(["reprocess", "x_ams_1960_frames", "a.tif", "b.tif"])
    assert (reprocess.collection, reprocess.keys, reprocess.force) == ("x_ams_1960_frames", ["a.tif", "b.tif"], False)
    assert parse(["reprocess", "x_ams_1960_frames", "--force"]).force
    assert parse(["failures", "--since", "2026-12-01"]).since == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert parse(["failures"]).since is None


def test_a_since_that_is_neither_duration_nor_date_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["failures", "--since", "last tuesday"])
    assert exit_.value.code == 2
    assert "neither a duration" in capsys.readouterr().err


@pytest.mark.parametrize("text, expected", [
    ("30m", datetime(2026, 12, 3, 11, 30, tzinfo=timezone.utc)),
    ("12h", datetime(2026, 12, 3, 0, 0, tzinfo=timezone.utc)),
    ("7d", datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)),
    ("2w", datetime(2026, 11, 19, 12, 0, tzinfo=timezone.utc)),
    ("2026-12-01", datetime(2026, 12, 1, tzinfo=timezone.utc)),
    ("2026-12-01T08:15", datetime(2026, 12, 1, 8, 15, tzinfo=timezone.utc)),
    ("2026-12-01T08:15+02:00", datetime(2026, 12, 1, 6, 15, tzinfo=timezone.utc)),
])
def test_since_is_a_duration_back_from_now_or_a_date_in_utc(text, expected):
    assert cli.parse_since(text, NOW) == expected


def test_reprocess_conf_is_what_the_collection_dag_reads():
    assert cli.run_conf(["a.tif", "b.tif"], force=False) == {"keys": ["a.tif", "b.tif"]}
    assert cli.run_conf([], force=True) == {"force": True}
    assert cli.run_conf([], force=False) == {}
    with pytest.raises(cli.CommandError, match="not both"):
        cli.run_conf(["a.tif"], force=True)


def test_key_may_be_given_as_its_s3_url():
    assert cli.key_of(f"s3://ls4/{KEY}", "ls4") == KEY
    assert cli.key_of(KEY, "ls4") == KEY
    assert cli.key_of(f"s3://other/{KEY}", "ls4") == f"s3://other/{KEY}"


# --- output ------------------------------------------------------------------------------------

def test_table_aligns_columns_and_puts_numbers_right():
    text = cli.table(["NAME", "FRAMES", "URL"], [["a_long_name", 3, "http://x"], ["b", 120, ""]])
    assert text.splitlines() == [
        "NAME         FRAMES  URL",
        "a_long_name       3  http://x",
        "b               120",
    ]


CAPABILITIES = b"""<?xml version="1.0"?>
<WMS_Capabilities version="1.3.0" xmlns="http://www.opengis.net/wms">
<Capability><Layer><Name>anderson_tops_1975_frames_map</Name>
  <Layer><Name>anderson_tops_1975_frames</Name></Layer>
  <Layer><Name>anderson_tops_1975_frames_index</Name></Layer>
</Layer></Capability></WMS_Capabilities>"""
EXCEPTION = b"""<?xml version="1.0"?><ServiceExceptionReport version="1.3.0" xmlns="http://www.opengis.net/ogc">
<ServiceException>msLoadMap(): Unable to access file.</ServiceException></ServiceExceptionReport>"""


def test_capabilities_give_layer_names_and_an_exception_report_none():
    assert cli.capabilities_layers(CAPABILITIES) == {
        "anderson_tops_1975_frames_map", "anderson_tops_1975_frames", "anderson_tops_1975_frames_index"}
    assert cli.capabilities_layers(EXCEPTION) is None
    assert cli.capabilities_layers(b"<html>502 Bad Gateway") is None


def test_where_text_names_the_stage_an_upload_stops_at():
    stages = where(UploadFacts(UPLOAD, "ls4", obj("19750312_4-1.tif")), WMS)
    text = cli.where_text(KEY, stages)
    assert text.splitlines()[0] == f"{KEY}: stops at: cog"
    assert "uploaded    yes" in text and "cog         NO" in text


# --- collection counts --------------------------------------------------------------------------

def test_counts_frames_pending_and_failed_by_current_version():
    cog = COLLECTION.cog_key
    georef = [obj("done.tif", "v1"), obj("new.tif", "v1"), obj("changed.tif", "v2"), obj("bad.tif", "v1"),
              obj("bad_then_fixed.tif", "v2"), obj("empty.tif", "v1", size=0)]
    indexed = {cog("done"): IndexedCog("v1", ""), cog("changed"): IndexedCog("v1", ""),
               cog("deleted_upload"): IndexedCog("v1", "")}
    failed = {GEOREF + "bad.tif": "v1", GEOREF + "bad_then_fixed.tif": "v1"}
    counts = collection_counts(COLLECTION, georef, indexed, failed)
    # new, changed (row of v1, upload v2), bad_then_fixed (v1 failed, v2 not tried yet); the empty
    # file is no run's work
    assert (counts.frames, counts.pending, counts.failed) == (3, 3, 1)


def test_an_upload_over_the_size_limit_is_not_pending_and_where_says_why():
    georef = [obj("huge.tif", "v1", size=3 * 2**30), obj("fits.tif", "v1")]
    counts = collection_counts(COLLECTION, georef, {}, {}, max_bytes=2 * 2**30)
    assert (counts.frames, counts.pending, counts.failed) == (0, 1, 0)
    huge = obj("huge.tif", "v1", size=3 * 2**30)
    facts = UploadFacts(parse_key(huge.key), "ls4", huge, [huge], None, None, None, table_generation=0,
                        mapfile_generation=None, wms_layers=None)
    (stage,) = where(facts, "http://wms/", max_bytes=2 * 2**30)
    assert stage.done is False and "LS4_MAX_UPLOAD_BYTES" in stage.reason


def test_of_a_tif_and_a_TIF_of_one_frame_only_the_newer_counts():
    georef = [obj("a.tif", "v1", minute=1), obj("a.TIF", "v2", minute=2)]
    counts = collection_counts(COLLECTION, georef, {COLLECTION.cog_key("a"): IndexedCog("v2", "")}, {})
    assert (counts.frames, counts.pending, counts.failed) == (1, 0, 0)


# --- where an upload is ---------------------------------------------------------------------------

HEAD = obj("19750312_4-1.tif", "v1")
SERVED = UploadFacts(UPLOAD, "ls4", HEAD, [HEAD], None, CogSource("v1", KEY), IndexedCog("v1", ""),
                     table_generation=4, mapfile_generation=4,
                     wms_layers=frozenset({COLLECTION.name, COLLECTION.name + "_index"}))


def facts(**changes) -> UploadFacts:
    return UploadFacts(**{**SERVED.__dict__, **changes})


def judged(stages) -> dict:
    return {stage.name: stage.done for stage in stages}


def test_a_served_upload_passes_every_stage():
    stages = where(SERVED, WMS)
    assert judged(stages) == {"uploaded": True, "not failed": True, "cog": True, "indexed": True, "served": True}
    assert stopped_at(stages) is None
    assert "ETag v1" in stages[0].reason and f"{WMS}?map=/mapfiles/{COLLECTION.name}.map" in stages[-1].reason


def test_a_missing_or_empty_upload_stops_at_uploaded():
    missing = where(facts(head=None, same_cog=[]), WMS)
    assert [(s.name, s.done) for s in missing] == [("uploaded", False)]
    assert "there is no s3://ls4/" + KEY in missing[0].reason
    empty = where(facts(head=obj("19750312_4-1.tif", size=0)), WMS)
    assert stopped_at(empty).name == "uploaded" and "empty" in empty[0].reason


def test_a_tif_superseded_by_a_newer_TIF_stops_at_uploaded_naming_the_other():
    newer = S3Object(GEOREF + "19750312_4-1.TIF", "v9", 100, datetime(2026, 12, 2, tzinfo=timezone.utc))
    stages = where(facts(same_cog=[HEAD, newer]), WMS)
    assert stopped_at(stages).name == "uploaded"
    assert newer.key in stages[0].reason and "rename or remove" in stages[0].reason


def test_a_failed_version_stops_at_not_failed_with_its_reason_and_how_to_retry():
    failure = Failure(KEY, "v1", "it is not georeferenced", datetime(2026, 12, 1, 9, tzinfo=timezone.utc))
    stages = where(facts(failure=failure, cog=None, row=None), WMS)
    assert judged(stages) == {"uploaded": True, "not failed": False, "cog": False, "indexed": False,
                              "served": False}
    assert "it is not georeferenced" in stages[1].reason and "2026-12-01 09:00:00 UTC" in stages[1].reason
    assert f"ls4 reprocess {COLLECTION.name} {KEY}" in stages[1].reason
    assert "processing it failed" in stages[2].reason


def test_a_failure_of_an_earlier_version_does_not_stop_the_new_one():
    failure = Failure(KEY, "v0", "16-bit", datetime(2026, 12, 1, 9, tzinfo=timezone.utc))
    stages = where(facts(failure=failure), WMS)
    assert stopped_at(stages) is None
    assert "earlier version" in stages[1].reason


def test_a_new_version_not_processed_yet_stops_at_cog_and_is_served_in_its_old_version():
    stages = where(facts(head=obj("19750312_4-1.tif", "v2"), same_cog=[]), WMS)
    assert judged(stages) == {"uploaded": True, "not failed": True, "cog": False, "indexed": False,
                              "served": False}
    assert "another version" in stages[2].reason and "next run" in stages[2].reason
    assert "an older version of this frame" in stages[4].reason


def test_no_cog_yet_says_the_next_run_makes_it():
    stages = where(facts(cog=None, row=None), WMS)
    assert stopped_at(stages).name == "cog" and "next run makes it" in stages[2].reason
    assert "without this frame" in stages[4].reason


def test_a_cog_without_its_row_stops_at_indexed():
    stages = where(facts(row=None), WMS)
    assert stopped_at(stages).name == "indexed" and "without raster work" in stages[3].reason


def test_no_published_mapfile_or_a_mapfile_mapserver_does_not_serve_stops_at_served():
    unpublished = where(facts(mapfile_generation=None, wms_layers=None), WMS)
    assert stopped_at(unpublished).name == "served" and "no mapfile" in unpublished[4].reason
    not_synced = where(facts(wms_layers=None), WMS)
    assert stopped_at(not_synced).name == "served" and "mapfile sync" in not_synced[4].reason


def test_a_mapfile_behind_the_table_serves_the_row_but_says_its_extent_may_not_cover_it():
    stages = where(facts(mapfile_generation=3), WMS)
    assert stopped_at(stages) is None
    assert "generation 3 of 4" in stages[4].reason


# --- the Airflow REST client -------------------------------------------------------------------------

RUN = {"dag_id": "ls4_x", "dag_run_id": "manual__1", "state": "queued", "run_type": "manual", "conf": {"force": True},
       "queued_at": "2026-12-03T12:00:00Z", "run_after": "2026-12-03T12:00:00Z", "start_date": None, "end_date": None}


class FakeAirflow(BaseHTTPRequestHandler):
    """Answers like Airflow 3's API server with the simple auth manager."""

    requests: list = []

    def log_message(self, *args):
        pass

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.requests.append(("GET", self.path, self.headers.get("Authorization"), None))
        if self.path == "/auth/token":
            self.answer(201, {"access_token": "all-admins"})
        elif self.headers.get("Authorization") not in ("Bearer all-admins", "Bearer with-password"):
            self.answer(401, {"detail": "Not authenticated"})
        elif self.path.startswith("/api/v2/dags/ls4_x/dagRuns?"):
            self.answer(200, {"dag_runs": [RUN], "total_entries": 1})
        elif self.path == "/api/v2/dags/ls4_x":
            self.answer(200, {"dag_id": "ls4_x", "is_paused": False})
        else:
            self.answer(404, {"detail": "The Dag with ID: `ls4_nope` was not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, self.headers.get("Authorization"), body))
        if self.path == "/auth/token":
            if body == {"username": "op", "password": "secret"}:
                self.answer(201, {"access_token": "with-password"})
            else:
                self.answer(401, {"detail": "Invalid credentials"})
        else:
            self.answer(200, {**RUN, "conf": body["conf"]})


@pytest.fixture
def airflow_url():
    FakeAirflow.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAirflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_gets_an_all_admins_token_once_and_sends_it(airflow_url):
    api = AirflowApi(airflow_url)
    run = api.last_run("ls4_x")
    assert (run.run_id, run.state, run.conf) == ("manual__1", "queued", {"force": True})
    assert run.last_change == datetime(2026, 12, 3, 12, tzinfo=timezone.utc)
    assert api.has_dag("ls4_x") and not api.has_dag("ls4_nope")
    tokens = [r for r in FakeAirflow.requests if r[1] == "/auth/token"]
    assert len(tokens) == 1 and tokens[0][0] == "GET"
    assert all(r[2] == "Bearer all-admins" for r in FakeAirflow.requests if r[1] != "/auth/token")
    assert "order_by=-run_after" in FakeAirflow.requests[1][1]


def test_client_logs_in_with_user_and_password_when_given(airflow_url):
    api = AirflowApi.from_env({"LS4_AIRFLOW_URL": airflow_url, "LS4_AIRFLOW_USER": "op",
                               "LS4_AIRFLOW_PASSWORD": "secret"})
    api.trigger("ls4_x", {"keys": ["a.tif"]})
    assert FakeAirflow.requests[0] == ("POST", "/auth/token", None, {"username": "op", "password": "secret"})
    assert FakeAirflow.requests[1] == ("POST", "/api/v2/dags/ls4_x/dagRuns", "Bearer with-password",
                                       {"logical_date": None, "conf": {"keys": ["a.tif"]}})


def test_client_error_carries_the_apis_detail(airflow_url):
    with pytest.raises(AirflowApiError) as error:
        AirflowApi(airflow_url).last_run("ls4_nope")
    assert error.value.status == 404 and error.value.detail == "The Dag with ID: `ls4_nope` was not found"
    with pytest.raises(AirflowApiError, match="Invalid credentials"):
        AirflowApi(airflow_url, "op", "wrong").last_run("ls4_x")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_client_says_when_nothing_answers():
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(AirflowUnreachable) as error:
        AirflowApi(url).last_run("ls4_x")
    assert error.value.url == url


def test_client_url_defaults_to_the_local_stacks_port():
    assert AirflowApi.from_env({"LS4_AIRFLOW_PORT": "18080"}).base_url == "http://127.0.0.1:18080"
    assert AirflowApi.from_env({"LS4_AIRFLOW_URL": "https://af.example/"}).base_url == "https://af.example"


def test_reprocess_of_a_name_that_is_no_collection_fails_before_any_request(tmp_path, monkeypatch):
    monkeypatch.setenv("LS4_REGISTRY", str(tmp_path / "registry.json"))
    args = argparse.Namespace(collection="Robert'); DROP TABLE", keys=[], force=False)
    services = cli.Services()
    with pytest.raises(cli.CommandError, match="not a collection name"):
        cli.run_reprocess(args, services)
    assert "airflow" not in services.__dict__
