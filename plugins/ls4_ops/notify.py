"""Failure notifications: what happened, to which key, and what to do.

The channel is chosen by a URL-like setting (``LS4_NOTIFY``):
``log`` (the worker's log only) or ``file:/path/notifications.jsonl``
(one JSON object a line, for the local stack and tests).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notification:
    subject: str
    reason: str
    key: str = ""
    collection: str = ""
    source: str = ""  # e.g. dag_id.task_id
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def text(self) -> str:
        where = f" ({self.key})" if self.key else ""
        return f"[ls4] {self.subject}{where}: {self.reason}"


class Notifier(Protocol):
    def send(self, notification: Notification) -> None: ...


class LogNotifier:
    def send(self, notification: Notification) -> None:
        log.warning("%s", notification.text)


class FileNotifier:
    def __init__(self, path: str):
        self.path = path

    def send(self, notification: Notification) -> None:
        LogNotifier().send(notification)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        line = json.dumps(asdict(notification) | {"text": notification.text}) + "\n"
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
