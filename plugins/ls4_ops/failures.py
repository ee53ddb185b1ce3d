"""Uploads that failed for a reason inside the file: not tried again until they change.

A bad upload (unreadable, not georeferenced, 16-bit, ...) fails the same
way on every run until someone uploads a new version. Its failure is kept
with the upload's ETag: planning leaves that version alone (a manual run
that names it still tries it), and a new version, with another ETag, is
processed like any other upload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ls4_ops.layout import Collection
from ls4_ops.tileindex import CATALOG_SCHEMA, create_once

TABLE = f"{CATALOG_SCHEMA}.upload_failures"


@dataclass(frozen=True)
class Failure:
    """A recorded failure of an upload: the version that failed, and why."""

    key: str
    etag: str
    reason: str
    failed: datetime


def _exists(connection: Connection) -> bool:
    return connection.execute(text("SELECT to_regclass(:table)"), {"table": TABLE}).scalar() is not None


def record(connection: Connection, key: str, etag: str, reason: str) -> None:
    """Remember that version ``etag`` of upload ``key`` cannot be processed, and why."""
    create_once(connection, TABLE, "key text PRIMARY KEY, etag text NOT NULL, reason text NOT NULL, "
                                   "failed timestamptz NOT NULL DEFAULT now()")
    connection.execute(text(
        f"INSERT INTO {TABLE} (key, etag, reason) VALUES (:key, :etag, :reason) ON CONFLICT (key) DO UPDATE "
        "SET etag = EXCLUDED.etag, reason = EXCLUDED.reason, failed = now()"),
        {"key": key, "etag": etag, "reason": reason})


def forget(connection: Connection, key: str) -> None:
    """The upload was processed: whatever failed before is history."""
    if _exists(connection):
        connection.execute(text(f"DELETE FROM {TABLE} WHERE key = :key"), {"key": key})


def reasons(connection: Connection, versions: Mapping[str, str | None]) -> dict[str, str]:
    """Why each upload that failed could not be processed. ``versions``: key -> the ETag of
    the version asked about (None: whichever failed); the failure of another version of it
    is not this one's reason."""
    if not versions or not _exists(connection):
        return {}
    rows = connection.execute(text(f"SELECT key, etag, reason FROM {TABLE} WHERE key = ANY(:keys)"),
                              {"keys": list(versions)}).all()
    return {key: reason for key, etag, reason in rows if versions[key] in (None, etag)}


def failed(connection: Connection, collection: Collection) -> dict[str, str]:
    """The collection's georef uploads that failed, and the ETag of the version that did."""
    if not _exists(connection):
        return {}
    return dict(connection.execute(text(f"SELECT key, etag FROM {TABLE} WHERE starts_with(key, :prefix)"),
                                   {"prefix": collection.prefix("georef")}).all())


def recorded(connection: Connection, *, key: str | None = None, since: datetime | None = None) -> list[Failure]:
    """The recorded failures (of one key, or since a time), newest first."""
    if not _exists(connection):
        return []
    rows = connection.execute(text(
        f"SELECT key, etag, reason, failed FROM {TABLE} WHERE (CAST(:key AS text) IS NULL OR key = :key) "
        "AND (CAST(:since AS timestamptz) IS NULL OR failed >= :since) ORDER BY failed DESC, key"),
        {"key": key, "since": since})
    return [Failure(*row) for row in rows]
