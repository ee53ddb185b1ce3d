"""Reading the bucket's event notifications, and the notification configuration ls4 sets."""

import json
import time

from ls4_ops import events


def notification(*records, bucket="ls4") -> str:
    """S3's notification JSON; a record is (event name, key) or (event name, key, ETag)."""
    return json.dumps({"Records": [
        {"eventName": name, "s3": {"bucket": {"name": bucket},
                                   "object": {"key": key, **({"eTag": etag[0]} if etag else {})}}}
        for name, key, *etag in records]})


def test_changes_are_read_from_s3_notifications_with_keys_decoded_etags_kept_and_the_last_event_winning():
    bodies = [
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "ls4"}),
        notification(("ObjectCreated:Put", "nc/a/usda_1961/frames/georef/x+y%281%29.tif", "e1"),
                     ("ObjectCreated:CompleteMultipartUpload", "nc/a/usda_1961/frames/georef/b.tif", "e2")),
        notification(("ObjectRemoved:Delete", "nc/a/usda_1961/frames/georef/b.tif"),
                     ("ObjectCreated:Put", "nc/a/usda_1961/frames/cog/b.tif")),
        notification(("ObjectCreated:Put", "nc/other/usda_1961/frames/georef/c.tif"), bucket="elsewhere"),
        "not json",
    ]
    changes = events.changes_in(bodies, "ls4")
    assert changes.created == ["nc/a/usda_1961/frames/georef/x y(1).tif", "nc/a/usda_1961/frames/cog/b.tif"]
    assert changes.removed == ["nc/a/usda_1961/frames/georef/b.tif"]
    assert changes.unreadable == ["not json"]
    uploads = changes.uploads()  # ls4's own COG is no one's upload
    assert uploads.to_dict() == {"created": ["nc/a/usda_1961/frames/georef/x y(1).tif"],
                                 "removed": ["nc/a/usda_1961/frames/georef/b.tif"],
                                 "etags": {"nc/a/usda_1961/frames/georef/x y(1).tif": "e1"}}
    assert not events.changes_in([notification(("ObjectCreated:Put", "nc/a/usda_1961/frames/cog/x.tif"))],
                                 "ls4").uploads()


def test_changes_from_several_events_merge_in_order():
    merged = events.BucketChanges()
    merged.merge({"created": ["k1", "k2"], "removed": [], "etags": {"k1": "old", "k2": "e2"}})
    merged.merge({"created": ["k3"], "removed": ["k1"]})
    merged.merge({"created": ["k1"], "etags": {"k1": "new"}})
    assert merged.to_dict() == {"created": ["k2", "k3", "k1"], "removed": [], "etags": {"k2": "e2", "k1": "new"}}


def test_the_notification_sends_uploads_and_mapfiles_to_their_queues_with_prefixes_that_do_not_overlap():
    uploads = events.queue_arn("https://sqs.us-west-2.amazonaws.com/111122223333/ls4-uploads", "us-west-2")
    mapfiles = events.queue_arn("http://127.0.0.1:9000/123456789012/ls4-mapfiles", "us-east-1")
    assert uploads == "arn:aws:sqs:us-west-2:111122223333:ls4-uploads"
    assert mapfiles == "arn:aws:sqs:us-east-1:123456789012:ls4-mapfiles"
    config = events.notification_configuration(uploads, mapfiles)["QueueConfigurations"]
    routes = {c["Filter"]["Key"]["FilterRules"][0]["Value"]: c["QueueArn"] for c in config}
    assert routes == {"bw/": uploads, "nc/": uploads, "mapfiles/": mapfiles}
    assert all(c["Events"] == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"] for c in config)
    prefixes = list(routes)
    assert not any(a != b and b.startswith(a) for a in prefixes for b in prefixes)
    assert len(events.notification_configuration(uploads)["QueueConfigurations"]) == 2


class SlowQueue:
    """An SQS client whose receive waits as long as asked (as SQS does when the queue is empty)."""

    def __init__(self, messages=()):
        self.messages = list(messages)
        self.receives = 0
        self.deleted = []

    def receive_message(self, QueueUrl, MaxNumberOfMessages, WaitTimeSeconds=0):
        self.receives += 1
        if self.messages:
            batch, self.messages = self.messages[:MaxNumberOfMessages], self.messages[MaxNumberOfMessages:]
            return {"Messages": batch}
        time.sleep(WaitTimeSeconds)
        return {}

    def delete_message_batch(self, QueueUrl, Entries):
        self.deleted += [entry["ReceiptHandle"] for entry in Entries]


def test_the_mapfile_sync_waits_without_spinning_and_wakes_on_an_event_with_the_queue_emptied():
    from ls4_ops.mapfile_sync import wait_for_event

    idle = SlowQueue()
    wait_for_event(idle, "q", at_most=1.5)
    assert idle.receives <= 2  # a wait of 0 s in the last second would spin: hundreds of requests
    busy = SlowQueue([{"ReceiptHandle": f"r{i}", "Body": "{}"} for i in range(13)])
    start = time.monotonic()
    wait_for_event(busy, "q", at_most=60)
    assert time.monotonic() - start < 5 and len(busy.deleted) == 13
