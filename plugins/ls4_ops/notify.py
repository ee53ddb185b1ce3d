"""Notifications: what happened, to which key, and what to do; each problem told once.

Channels: ``LS4_NOTIFY`` names the local one, ``log`` (the worker's log only)
or ``file:/path/notifications.jsonl`` (one JSON object a line, for the local
stack and tests); ``LS4_SNS_TOPIC_ARN`` adds an SNS topic (published through
the amazon provider, in ``operators/notifications.py``). A channel that fails
is logged and skipped: telling someone never fails the pipeline.

A problem is identified by its subject and key and the version of the object
it is about (the upload's ETag); a task out of retries by its task and run
(the next run's failure is news). :func:`unsent` keeps the identities sent
in PostGIS, so the same problem is not sent again by a later run, a retry or
another task that meets it; a notification that some channel could not take
is :func:`released`, so the next one to meet the problem sends it again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Protocol

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ls4_ops.tileindex import CATALOG_SCHEMA, create_once

log = logging.getLogger(__name__)

SENT = f"{CATALOG_SCHEMA}.notices_sent"


@dataclass(frozen=True)
class Notification:
    subject: str
    reason: str
    key: str = ""
    collection: str = ""
    source: str = ""  # dag_id.task_id
    etag: str = ""  # of the object the problem is about
    run_id: str = ""
    run_url: str = ""  # the task's page (and log) in Airflow
    per_run: bool = False  # a task out of retries: each run's failure is its own problem
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def identity(self) -> tuple[str, str, str]:
        """What makes two notifications the same problem."""
        if self.per_run:
            return self.subject, self.key or self.source, f"{self.etag}@{self.run_id}"
        if self.key:
            return self.subject, self.key, self.etag
        return self.subject, self.source, self.run_id

    @property
    def text(self) -> str:
        where = f" ({self.key})" if self.key else ""
        return f"[ls4] {self.subject}{where}: {self.reason}"

    @property
    def message(self) -> str:
        """The whole notice, for a channel that shows plain text (an e-mail through SNS)."""
        lines = [self.text, ""]
        lines += [f"{label}: {value}" for label, value in (
            ("Key", self.key), ("Collection", self.collection), ("Reason", self.reason),
            ("Airflow", self.run_url), ("Task", self.source), ("Time", self.time)) if value]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {name: value for name, value in asdict(self).items() if name != "per_run"} | {"text": self.text}


class Notifier(Protocol):
    def send(self, notification: Notification) -> None: ...


class LogNotifier:
    def send(self, notification: Notification) -> None:
        log.warning("%s%s", notification.text, f" ({notification.run_url})" if notification.run_url else "")


class FileNotifier:
    def __init__(self, path: str):
        self.path = path

    def send(self, notification: Notification) -> None:
        LogNotifier().send(notification)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        line = json.dumps(notification.to_dict()) + "\n"
        # One write on an O_APPEND descriptor: concurrent workers never interleave lines.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def notifier_from_setting(setting: str) -> Notifier:
    if setting in ("", "log"):
        return LogNotifier()
    if setting.startswith("file:"):
        return FileNotifier(setting[len("file:"):])
    raise ValueError(f"LS4_NOTIFY={setting!r}: expected 'log' or 'file:/path'")


def unsent(connection: Connection, notifications: Iterable[Notification]) -> list[Notification]:
    """The notifications whose problem was not sent before, now recorded as sent (in the
    caller's transaction: two tasks meeting the same problem at once send it once)."""
    pending: dict[tuple[str, str, str], Notification] = {}
    for notification in notifications:
        pending.setdefault(notification.identity, notification)
    if not pending:
        return []
    create_once(connection, SENT, "subject text NOT NULL, key text NOT NULL, version text NOT NULL, "
                                  "sent timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (subject, key, version)")
    identities = list(pending)
    claimed = connection.execute(text(
        f"INSERT INTO {SENT} (subject, key, version) "
        "SELECT * FROM unnest(CAST(:subjects AS text[]), CAST(:keys AS text[]), CAST(:versions AS text[])) "
        "ON CONFLICT DO NOTHING RETURNING subject, key, version"),
        {"subjects": [i[0] for i in identities], "keys": [i[1] for i in identities],
         "versions": [i[2] for i in identities]}).all()
    new = {tuple(row) for row in claimed}
    return [notification for identity, notification in pending.items() if identity in new]


def released(connection: Connection, notifications: Iterable[Notification]) -> None:
    """Forget that these were sent (a channel could not take them): the next to meet the
    problem sends it again."""
    identities = [notification.identity for notification in notifications]
    if identities:
        connection.execute(text(
            f"DELETE FROM {SENT} WHERE (subject, key, version) IN (SELECT * FROM unnest("
            "CAST(:subjects AS text[]), CAST(:keys AS text[]), CAST(:versions AS text[])))"),
            {"subjects": [i[0] for i in identities], "keys": [i[1] for i in identities],
             "versions": [i[2] for i in identities]})


def deliver(notifications: Iterable[Notification], channels: Iterable[Notifier]) -> list[Notification]:
    """Send each notification on every channel; a channel that fails is logged, not raised.
    Returns the notifications some channel could not take."""
    channels = list(channels)
    undelivered = []
    for notification in notifications:
        failed = False
        for channel in channels:
            try:
                channel.send(notification)
            except Exception:  # noqa: BLE001 - a channel that is down must not fail the pipeline
                failed = True
                log.exception("could not send %r through %s", notification.text, type(channel).__name__)
        if failed:
            undelivered.append(notification)
    return undelivered
