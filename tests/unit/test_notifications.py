"""Notifications: which objects a run reports (those changed since the previous successful
run began), what makes two notices the same problem, what a message says, and channels."""

from datetime import datetime, timezone

import pytest

from airflow.providers.amazon.aws.hooks.sns import SnsHook

from ls4_ops.notify import Notification, deliver
from ls4_ops.operators.notifications import SnsNotifier, last_success_start
from ls4_ops.plan import S3Object

RUN_START = datetime(2026, 5, 1, 12, 0, 30, 600_000, tzinfo=timezone.utc)


def listed(second: int) -> S3Object:
    """As S3 lists it: LastModified to the whole second."""
    return S3Object("nc/c/a_1950/frames/georef/x.tif", "etag", 1,
                    datetime(2026, 5, 1, 12, 0, second, tzinfo=timezone.utc))


@pytest.mark.parametrize("second, new", [(29, False), (30, True), (31, True)])
def test_objects_from_the_second_the_last_run_began_count_as_new(second, new):
    # An upload at 12:00:30.9, after the run that began at 12:00:30.6 listed
    # the bucket, is listed as 12:00:30: it must not be taken as already seen.
    assert listed(second).changed_since(last_success_start({"prev_start_date_success": RUN_START})) is new


@pytest.mark.parametrize("context", [{}, {"prev_start_date_success": None}])
def test_without_a_previous_success_everything_is_new(context):
    assert last_success_start(context) is None
    assert listed(0).changed_since(None)


def test_a_problem_is_its_subject_key_and_version_and_a_task_out_of_retries_also_its_run():
    first = Notification("upload cannot be processed", "16-bit", key="k.tif", etag="e1", run_id="r1")
    assert first.identity == Notification("upload cannot be processed", "other words", key="k.tif", etag="e1",
                                          run_id="r2").identity
    assert first.identity != Notification("upload cannot be processed", "16-bit", key="k.tif", etag="e2").identity
    failure = Notification("ls4_x.plan failed", "boom", source="ls4_x.plan", run_id="r1", per_run=True)
    assert failure.identity == ("ls4_x.plan failed", "ls4_x.plan", "@r1")
    # The same task failing on the same upload in the next run is news.
    cog = Notification("ls4_x.frame.cog failed", "boom", key="k.tif", etag="e1", run_id="r1", per_run=True)
    assert cog.identity != Notification("ls4_x.frame.cog failed", "boom", key="k.tif", etag="e1", run_id="r2",
                                        per_run=True).identity


def test_the_message_carries_key_collection_reason_and_run_link():
    message = Notification("upload cannot be processed", "it is 16-bit: export 8-bit", key="k.tif",
                           collection="c", run_url="http://airflow/dags/d/runs/r/tasks/t").message
    assert message.splitlines()[0] == "[ls4] upload cannot be processed (k.tif): it is 16-bit: export 8-bit"
    for line in ("Key: k.tif", "Collection: c", "Reason: it is 16-bit: export 8-bit",
                 "Airflow: http://airflow/dags/d/runs/r/tasks/t"):
        assert line in message.splitlines()


class Down:
    def send(self, notification):
        raise ConnectionError("the topic's endpoint is down")


class Kept(list):
    def send(self, notification):
        self.append(notification)


def test_a_channel_that_is_down_is_logged_the_others_still_send_and_what_it_missed_is_named(caplog):
    kept = Kept()
    notices = [Notification("a", "why", key="k1"), Notification("b", "why", key="k2")]
    assert deliver(notices, [Down(), kept]) == notices
    assert kept == notices
    assert deliver(notices, [Kept()]) == []
    assert "could not send" in caplog.text and "the topic's endpoint is down" in caplog.text


def test_an_sns_subject_is_printable_ascii_of_at_most_100_characters(monkeypatch):
    sent = {}
    monkeypatch.setattr(SnsHook, "publish_to_target", lambda self, **kwargs: sent.update(kwargs))
    key = "nc/caldwell/usda_1961/frames/georef/Lockhart é\n" + "x" * 100 + ".tif"
    SnsNotifier("arn:aws:sns:us-east-1:1:t", "aws_default").send(
        Notification("upload cannot be processed", "why", key=key, collection="c"))
    assert len(sent["subject"]) <= 100 and sent["subject"].isascii() and sent["subject"].isprintable()
    assert sent["message_attributes"] == {"subject": "upload cannot be processed", "key": key, "collection": "c"}
    assert key in sent["message"]
