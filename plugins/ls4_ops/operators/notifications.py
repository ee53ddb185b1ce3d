"""Sending notifications from tasks and task-failure callbacks: on every configured
channel (the local one, and the SNS topic when one is set), each problem once."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

from ls4_ops.errors import BadUpload, UploadsUnprocessed
from ls4_ops.notify import Notification, Notifier, deliver, notifier_from_setting, released, unsent
from ls4_ops.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

# SNS refuses a subject over 100 characters, or one with anything but printable ASCII.
SNS_SUBJECT_LENGTH = 100


class SnsNotifier:
    """Publishes each notification to an SNS topic through the amazon provider's hook: the
    whole notice as the message, its key, collection and subject as message attributes
    (for subscription filter policies)."""

    def __init__(self, topic_arn: str, aws_conn_id: str):
        self.topic_arn = topic_arn
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self):
        from airflow.providers.amazon.aws.hooks.sns import SnsHook

        return SnsHook(aws_conn_id=self.aws_conn_id)

    def send(self, notification: Notification) -> None:
        subject = notification.text.encode("ascii", "replace").decode()
        subject = "".join(c if c.isprintable() else "?" for c in subject)[:SNS_SUBJECT_LENGTH]
        attributes = {"subject": notification.subject, "key": notification.key,
                      "collection": notification.collection}
        self.hook.publish_to_target(
            target_arn=self.topic_arn, message=notification.message, subject=subject,
            message_attributes={name: value for name, value in attributes.items() if value})


def channels(settings: Settings, aws_conn_id: str) -> list[Notifier]:
    found: list[Notifier] = [notifier_from_setting(settings.notify)]
    if settings.sns_topic_arn:
        found.append(SnsNotifier(settings.sns_topic_arn, aws_conn_id))
    return found


def send(notifications: Iterable[Notification], *, settings: Settings, aws_conn_id: str,
         postgis: Engine | None) -> None:
    """Send what was not sent before on every channel. Never raises: when PostGIS cannot say
    what was sent, everything is sent; what a channel could not take is sent again by the
    next task that meets it (twice at worst, never lost)."""
    notifications = list(notifications)
    if not notifications:
        return
    claimed = False
    if postgis is not None:
        try:
            with postgis.begin() as connection:
                notifications = unsent(connection, notifications)
            claimed = True
        except Exception:  # noqa: BLE001 - a database outage must not hide the problems
            log.exception("could not check which of %d problems were sent before; sending them all",
                          len(notifications))
    undelivered = deliver(notifications, channels(settings, aws_conn_id))
    if claimed and undelivered:
        try:
            with postgis.begin() as connection:
                released(connection, undelivered)
        except Exception:  # noqa: BLE001
            log.exception("could not release %d notices no channel took", len(undelivered))


_LEDGER_ENGINES: dict[str, Engine] = {}


def ledger_engine(conn_id: str) -> Engine | None:
    """The engine of the notices' ledger (one per process), or None when the connection
    cannot be made."""
    if conn_id not in _LEDGER_ENGINES:
        from ls4_ops.hooks import postgis_engine  # boto3 comes with ls4_ops.hooks: not at parse time

        try:
            _LEDGER_ENGINES[conn_id] = postgis_engine(conn_id)
        except Exception:  # noqa: BLE001 - the notices must still go out
            log.exception("no PostGIS connection %r for the notices' ledger", conn_id)
            return None
    return _LEDGER_ENGINES[conn_id]


def notify_task_failure(context) -> None:
    """``on_failure_callback``: a task is out of retries (or failed for good)."""
    error = context.get("exception")
    if isinstance(getattr(error, "__cause__", None), (BadUpload, UploadsUnprocessed)):
        return  # the operator already sent the uploader-facing reasons
    ti = context["ti"]
    task = context["task"]
    upload = getattr(task, "upload", None)
    upload = upload if isinstance(upload, dict) else {}
    settings = Settings.from_env()
    notification = Notification(
        subject=f"{ti.dag_id}.{ti.task_id} failed",
        reason=f"{error or 'task failed'}. See the task log in Airflow; fix the cause and clear the task "
               "or trigger the DAG again",
        key=upload.get("key", ""),
        etag=upload.get("etag", ""),
        collection=getattr(task, "collection_name", ""),
        source=f"{ti.dag_id}.{ti.task_id}",
        run_id=ti.run_id,
        run_url=ti.log_url,
        per_run=True,
    )
    send([notification], settings=settings, aws_conn_id=getattr(task, "aws_conn_id", settings.s3_conn_id),
         postgis=ledger_engine(getattr(task, "postgis_conn_id", "") or settings.postgis_conn_id))


def last_success_start(context) -> datetime | None:
    """When the DAG's previous successful run began: what changed before was reported by it."""
    since = context.get("prev_start_date_success")
    # Airflow hands over a lazy proxy: test what it holds, not whether it is None.
    return since if isinstance(since, datetime) else None
