"""What operators get on the real local stack: notifications (SNS through the S3 emulator's
own topic, read back from the queue subscribed to it; each problem told once; a channel that
is down fails nothing) and the run ledger in PostGIS."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone

import rasterio
import rio_cogeo

import pytest

from include import local_stack
from include.synthetic import make_frame, make_not_georeferenced
from ls4_ops import ledger, turbo_gdal
from ls4_ops.layout import parse_key
from ls4_ops.notify import Notification, unsent
from tests.integration import pipeline

pytestmark = pytest.mark.usefixtures("airflow_db")

GEOREF = "nc/noticeville/usda_1961/frames/georef/"
COLLECTION = parse_key(GEOREF + "x.tif").collection
GOOD = GEOREF + "19610412_2-1.tif"
BAD = GEOREF + "19610412_2-2.tif"
OUTSIDE = GEOREF + "extra/19610412_2-3.tif"  # one folder too deep


def topic_queue() -> str:
    name = os.environ["LS4_SNS_TOPIC_ARN"].rsplit(":", 1)[1]
    return pipeline.sqs().get_queue_url(QueueName=name)["QueueUrl"]


def published() -> list[dict]:
    """What was published to the topic since the last call: SNS's envelope, attributes flattened."""
    sqs, url, messages = pipeline.sqs(), topic_queue(), []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       MessageAttributeNames=["All"]).get("Messages", []):
        for message in batch:
            envelope = json.loads(message["Body"])
            envelope["attributes"] = {name: value["Value"]
                                      for name, value in envelope.get("MessageAttributes", {}).items()}
            messages.append(envelope)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def about(messages: list[dict], key: str) -> list[dict]:
    return [m for m in messages if m["attributes"].get("key") == key]


@pytest.fixture(scope="module")
def first_run(services, tmp_path_factory):
    folder = tmp_path_factory.mktemp("notices")
    good, bad = str(folder / "good.tif"), str(folder / "bad.tif")
    make_frame(good, "nc", 400, 300, crs=pipeline.UTM, bounds=pipeline.row_bounds((640_000, 3_350_000), (400, 300), 0))
    make_not_georeferenced(bad)
    published()  # what earlier modules published is not this module's
    for key, path in ((GOOD, good), (BAD, bad), (OUTSIDE, good)):
        pipeline.upload(path, key)
    assert COLLECTION.name in pipeline.discover()
    run = pipeline.run_dag(COLLECTION.dag_id)
    return run, published()


def test_a_bad_upload_is_published_once_with_its_reason_collection_and_run_link(first_run):
    run, messages = first_run
    assert run.state == "failed"  # the report names what was left unprocessed
    notices = about(messages, BAD)
    assert len(notices) == 1, notices
    notice = notices[0]
    assert notice["attributes"] == {"subject": "upload cannot be processed", "key": BAD,
                                    "collection": COLLECTION.name}
    assert notice["Subject"].startswith(f"[ls4] upload cannot be processed ({BAD})")
    assert "not georeferenced" in notice["Message"]
    assert f"Collection: {COLLECTION.name}" in notice["Message"]
    link = f"{os.environ['AIRFLOW__API__BASE_URL'].rstrip('/')}/dags/{COLLECTION.dag_id}/runs/"
    assert f"Airflow: {link}" in notice["Message"] and "/tasks/frame.compress" in notice["Message"]
    # An unreadable upload is told that, and nothing else (no "original scan missing").
    assert [n["subject"] for n in pipeline.notifications() if n["key"] == BAD] == ["upload cannot be processed"]


def test_a_key_outside_the_layout_is_told_once_though_discovery_and_the_run_both_meet_it(first_run):
    _, messages = first_run
    assert [m["attributes"]["subject"] for m in about(messages, OUTSIDE)] == ["upload outside the bucket layout"]
    assert len([n for n in pipeline.notifications() if n["key"] == OUTSIDE]) == 1


def test_the_next_run_tells_nothing_again_and_is_not_green_while_an_upload_is_left_unprocessed(first_run):
    run = pipeline.run_dag(COLLECTION.dag_id)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["frame.compress"] == "skipped" and states["tile_index"] == "skipped"
    report = next(ti for ti in run.get_task_instances() if ti.task_id == "report")
    assert report.state == "failed"
    assert published() == []


def test_a_channel_that_is_down_fails_nothing_the_others_still_tell_and_it_is_told_later(
        first_run, monkeypatch, tmp_path):
    monkeypatch.setenv("LS4_SNS_TOPIC_ARN", os.environ["LS4_SNS_TOPIC_ARN"] + "-that-does-not-exist")
    another = GEOREF + "19610412_2-4.tif"
    path = str(tmp_path / "plain.tif")
    make_not_georeferenced(path)
    pipeline.upload(path, another)
    run = pipeline.run_dag(COLLECTION.dag_id)
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("frame.compress", 0)] == "failed"  # the bad file itself
    assert states[("tile_index", -1)] == "success" and states[("wms_served", -1)] == "success"
    assert [n["subject"] for n in pipeline.notifications() if n["key"] == another] == ["upload cannot be processed"]
    monkeypatch.undo()
    assert published() == []
    # What the topic missed is not marked as told: the next task that meets the problem (a
    # manual run naming the upload) sends it again, and the topic has it this time.
    pipeline.run_dag(COLLECTION.dag_id, keys=[another])
    assert [m["attributes"]["subject"] for m in about(published(), another)] == ["upload cannot be processed"]


def test_two_tasks_meeting_the_same_problem_at_once_send_it_once(services):
    engine = local_stack.postgis_engine()
    same = [Notification("upload cannot be processed", "why", key=GEOREF + "race.tif", etag="e1")]
    results, start = [], threading.Barrier(2)

    def claim():
        start.wait()
        with engine.begin() as connection:
            results.append(unsent(connection, same))

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(result) for result in results) == [0, 1]
    # Another version of the upload is another problem.
    with engine.begin() as connection:
        assert len(unsent(connection, [Notification("upload cannot be processed", "why", key=GEOREF + "race.tif",
                                                    etag="e2")])) == 1


def test_the_ledger_says_what_happened_to_a_good_and_a_bad_upload(first_run):
    with local_stack.postgis_engine().connect() as connection:
        good, bad = ledger.history(connection, GOOD), ledger.history(connection, BAD)
        week = ledger.failed_since(connection, datetime.now(timezone.utc) - timedelta(days=7))
        jpeg_q85 = ledger.made_with(connection, "cog", {"creation": {"QUALITY": 85}})
        lossless = ledger.made_with(connection, "cog", {"creation": {"COMPRESS": "DEFLATE"}})
    assert [(r.stage, r.outcome) for r in good] == [("compress", "success"), ("overviews", "success"),
                                                     ("cog", "success")]
    cog = good[-1]
    assert cog.outputs == [COLLECTION.cog_key("19610412_2-1")]
    assert cog.etag == pipeline.s3().head_object(Bucket=pipeline.bucket(), Key=GOOD)["ETag"].strip('"')
    assert cog.software == {"gdal": rasterio.__gdal_version__, "gdal-jpeg-cog": turbo_gdal.version(),
                            "rasterio": rasterio.__version__, "rio-cogeo": rio_cogeo.__version__}
    assert cog.options == ledger.stage_options("cog", "nc") and cog.seconds > 0
    assert good[0].outputs[0].startswith("ls4-work/") and good[0].started < cog.started
    # The bad upload failed at its first stage, for its reason, and went no further.
    assert [(r.stage, r.outcome) for r in bad] == [("compress", "bad upload")]
    assert "not georeferenced" in bad[0].reason and bad[0].outputs == []
    assert BAD in {r.key for r in week} and GOOD not in {r.key for r in week}
    assert GOOD in {r.key for r in jpeg_q85} and GOOD not in {r.key for r in lossless}
