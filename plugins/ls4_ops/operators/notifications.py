"""Sending notifications from tasks and task-failure callbacks."""

from __future__ import annotations

from datetime import datetime

from ls4_ops.errors import BadUpload
from ls4_ops.notify import Notification, notifier_from_setting
from ls4_ops.settings import Settings


def send(subject: str, reason: str, *, key: str = "", collection: str = "", source: str = "") -> None:
    notification = Notification(subject=subject, reason=reason, key=key, collection=collection,
                                source=source)
    notifier_from_setting(Settings.from_env().notify).send(notification)


def notify_task_failure(context) -> None:
    """``on_failure_callback``: a task is out of retries (or failed for good)."""
    error = context.get("exception")
    if isinstance(getattr(error, "__cause__", None), BadUpload):
        return  # the operator already sent the uploader-facing reason
    ti = context["ti"]
    task = context["task"]
    upload = getattr(task, "upload", None)
    key = upload.get("key", "") if isinstance(upload, dict) else ""
    send(
        subject=f"{ti.dag_id}.{ti.task_id} failed",
        reason=f"{error or 'task failed'}. See the task log in Airflow; fix the cause and clear the task "
               "or trigger the DAG again",
        key=key,
        collection=getattr(task, "collection_name", ""),
        source=f"{ti.dag_id}.{ti.task_id}",
    )


def last_success_start(context) -> datetime | None:
    """When the DAG's previous successful run began: what changed before was reported by it."""
    since = context.get("prev_start_date_success")
    # Airflow hands over a lazy proxy: test what it holds, not whether it is None.
    return since if isinstance(since, datetime) else None
