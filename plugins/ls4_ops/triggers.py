"""The trigger that turns the bucket's upload events into Airflow asset events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from ls4_ops import events

# A burst of uploads is read whole (up to this many messages) and fired as one event.
MAX_MESSAGES_PER_EVENT = 1000
SQS_BATCH = 10  # the most SQS returns or deletes in one request


class UploadEventsTrigger(BaseEventTrigger):
    """Long-polls the SQS queue the bucket sends its events to, and fires one event
    for each batch of messages that reports a change to an upload.

    Every message read is deleted, those about ls4's own outputs too (they are
    no one's work). A burst is drained before firing (up to
    ``MAX_MESSAGES_PER_EVENT`` messages), so it becomes one event, not one per
    upload. The payload is ``{"created": [keys], "removed": [keys]}``. When
    idle it costs one request per ``wait_time_seconds``; a failing queue is
    retried every ``retry_delay`` seconds, never given up.

    :param queue_url: the SQS queue's URL
    :param bucket: the bucket whose events count (others on the queue are dropped)
    :param aws_conn_id: the AWS connection to reach SQS with
    :param wait_time_seconds: SQS long-poll wait, at most 20
    :param retry_delay: seconds before retrying after an error
    """

    def __init__(self, queue_url: str, bucket: str, aws_conn_id: str | None = None, wait_time_seconds: int = 20,
                 retry_delay: float = 30.0):
        super().__init__()
        self.queue_url = queue_url
        self.bucket = bucket
        self.aws_conn_id = aws_conn_id
        self.wait_time_seconds = wait_time_seconds
        self.retry_delay = retry_delay

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"queue_url": self.queue_url, "bucket": self.bucket, "aws_conn_id": self.aws_conn_id,
                 "wait_time_seconds": self.wait_time_seconds, "retry_delay": self.retry_delay})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Imported here: the ls4_uploads DAG file builds this trigger, and the hook brings boto3.
        from airflow.providers.amazon.aws.hooks.sqs import SqsHook

        hook = SqsHook(aws_conn_id=self.aws_conn_id)
        while True:
            try:
                async with await hook.get_async_conn() as client:
                    while True:
                        bodies = await self.receive_burst(client)
                        changes = events.changes_in(bodies, self.bucket)
                        for body in changes.unreadable:
                            self.log.warning("not an S3 event notification, dropped: %s", body)
                        uploads = changes.uploads()
                        if uploads:
                            self.log.info("%d uploads created or replaced, %d removed",
                                          len(uploads.created), len(uploads.removed))
                            yield TriggerEvent(uploads.to_dict())
            except asyncio.CancelledError:
                raise
            except Exception:  # an SQS outage must not end the watch: no events would ever come again
                self.log.exception("reading %s failed; trying again in %.0f s", self.queue_url, self.retry_delay)
                await asyncio.sleep(self.retry_delay)

    async def receive_burst(self, client) -> list[str]:
        """The bodies of the messages waiting (after a long poll for the first), each deleted."""
        bodies: list[str] = []
        wait = self.wait_time_seconds
        while len(bodies) < MAX_MESSAGES_PER_EVENT:
            response = await client.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=SQS_BATCH,
                                                    WaitTimeSeconds=wait)
            messages = response.get("Messages", [])
            if not messages:
                break
            await client.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]} for i, message in enumerate(messages)])
            bodies += [message["Body"] for message in messages]
            wait = 0  # the rest of the burst: what is there now
        return bodies
