"""What S3 event notifications say changed in the bucket.

A bucket configured as the README says sends an event for every object
created or removed to an SQS queue; the upload router reads them in batches.
Each message body is S3's notification JSON (``{"Records": [...]}``), or the
``s3:TestEvent`` S3 sends once when the notification is set up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_plus, urlsplit

from ls4_ops.layout import BAND_PREFIXES, MAPFILE_PREFIX, is_output_key

EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


@dataclass
class BucketChanges:
    """Keys created (or replaced) and removed, in the order the events came, each once."""

    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # message bodies that are no S3 notification
    etags: dict[str, str] = field(default_factory=dict)  # of the created keys, where the event gave one

    def add(self, event_name: str, key: str, etag: str = "") -> None:
        # A key created after it was removed (or the reverse) counts as its last event.
        for keys in (self.created, self.removed):
            if key in keys:
                keys.remove(key)
        self.etags.pop(key, None)
        if event_name.startswith("ObjectRemoved"):
            self.removed.append(key)
        else:
            self.created.append(key)
            if etag:
                self.etags[key] = etag

    def to_dict(self) -> dict:
        return {"created": self.created, "removed": self.removed, "etags": self.etags}

    def merge(self, other: dict) -> None:
        """Add the changes of a later ``to_dict()``."""
        etags = other.get("etags", {})
        for key in other.get("created", []):
            self.add("ObjectCreated", key, etags.get(key, ""))
        for key in other.get("removed", []):
            self.add("ObjectRemoved", key)

    def uploads(self) -> "BucketChanges":
        """The changes made by people: without ls4's own outputs under ``cog/``."""
        created = [key for key in self.created if not is_output_key(key)]
        return BucketChanges(created, [key for key in self.removed if not is_output_key(key)],
                             etags={key: self.etags[key] for key in created if key in self.etags})

    def __bool__(self) -> bool:
        return bool(self.created or self.removed)


def changes_in(bodies: Iterable[str], bucket: str) -> BucketChanges:
    """The changes to ``bucket`` the message ``bodies`` report (other buckets' are ignored)."""
    changes = BucketChanges()
    for body in bodies:
        try:
            records = json.loads(body).get("Records")
            if records is None:  # the s3:TestEvent, or something else on the queue
                if json.loads(body).get("Event") != "s3:TestEvent":
                    changes.unreadable.append(body[:200])
                continue
            for record in records:
                s3 = record["s3"]
                if s3["bucket"]["name"] == bucket:
                    # S3 sends keys URL-encoded, spaces as "+".
                    changes.add(record["eventName"], unquote_plus(s3["object"]["key"]),
                                s3["object"].get("eTag", "").strip('"'))
        except (ValueError, KeyError, TypeError, AttributeError):
            changes.unreadable.append(body[:200])
    return changes


def queue_arn(queue_url: str, region: str) -> str:
    """The ARN of the SQS queue at ``queue_url`` (``.../{account}/{name}``, on AWS or an emulator)."""
    account, name = urlsplit(queue_url).path.strip("/").split("/")[-2:]
    return f"arn:aws:sqs:{region}:{account}:{name}"


def notification_configuration(upload_queue_arn: str, mapfile_queue_arn: str | None = None) -> dict:
    """The bucket's event notifications: uploads (everything under ``bw/`` and ``nc/``)
    to the upload queue, mapfiles and preview pages to the mapfile sync's queue.
    Prefixes that do not overlap, as S3 requires of one bucket's configurations."""
    queues = [(upload_queue_arn, prefix) for prefix in BAND_PREFIXES]
    if mapfile_queue_arn:
        queues.append((mapfile_queue_arn, MAPFILE_PREFIX))
    return {"QueueConfigurations": [
        {"Id": f"ls4-{prefix.strip('/')}", "QueueArn": arn, "Events": EVENTS,
         "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}}
        for arn, prefix in queues]}
