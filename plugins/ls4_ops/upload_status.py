"""Where uploads are in the pipeline, and why: the answers of the ``ls4`` command.

Pure decisions on facts gathered elsewhere (a HEAD of the upload and of its
COG, its index row, its recorded failure, the published mapfile, the WMS);
the command does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ls4_ops.failures import Failure
from ls4_ops.layout import Collection, UploadKey
from ls4_ops.mapfile import mapfile_url
from ls4_ops.plan import CogSource, S3Object, uploads_by_cog
from ls4_ops.tileindex import IndexedCog


def utc(moment: datetime | None) -> str:
    """A time as operators read it, whatever zone it came in (S3's, the database session's)."""
    return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC" if moment else ""


@dataclass(frozen=True)
class CollectionCounts:
    frames: int  # rows of the tile index
    pending: int  # uploads whose current version is not in the index yet, and has not failed
    failed: int  # uploads whose current version failed


def collection_counts(collection: Collection, georef: Iterable[S3Object], indexed: Mapping[str, IndexedCog],
                      failed: Mapping[str, str], max_bytes: int | None = None) -> CollectionCounts:
    """Counts of a collection from its georef uploads, its index rows by COG key and its
    recorded failures (key -> ETag of the version that failed).

    An upload is done when its COG's row was made from its current version (the
    row is written the moment the COG is published). A failure of an older
    version does not count: the new version waits for a run like any other.
    Uploads no run would take (empty files, larger than ``max_bytes``, a ``.tif``
    superseded by a ``.TIF``) are neither pending nor failed: ``ls4 where`` tells why.
    """
    uploads, _ = uploads_by_cog(collection, georef, max_bytes)
    pending = failed_now = 0
    for cog_key, upload in uploads.items():
        row = indexed.get(cog_key)
        if row is not None and row.source_etag == upload.etag:
            continue
        if failed.get(upload.key) == upload.etag:
            failed_now += 1
        else:
            pending += 1
    return CollectionCounts(frames=len(indexed), pending=pending, failed=failed_now)


@dataclass(frozen=True)
class Stage:
    """One step of an upload's way to the WMS."""

    name: str
    done: bool | None  # True: passed; False: the upload stops here; None: not reached
    reason: str


@dataclass(frozen=True)
class UploadFacts:
    """What the bucket, PostGIS and MapServer say about one georef upload."""

    upload: UploadKey
    bucket: str
    head: S3Object | None  # the object itself; None when there is none
    # Georef uploads of the same name (a .tif and a .TIF make one COG); empty: none listed.
    same_cog: list[S3Object] = field(default_factory=list)
    failure: Failure | None = None
    cog: CogSource | None = None  # the COG's source metadata; None when there is no COG
    row: IndexedCog | None = None  # the COG's row of the tile index
    table_generation: int = 0  # changes of the index table so far
    mapfile_generation: int | None = None  # the generation the published mapfile shows; None: none published
    wms_layers: frozenset[str] | None = None  # layers the collection's WMS lists; None: it answered no capabilities


def where(facts: UploadFacts, wms_url: str, max_bytes: int | None = None) -> list[Stage]:
    """Each stage of the upload's way (uploaded, not failed, COG, indexed, served by the WMS), and why.

    A stage is judged on the upload's current version: a COG or row made from
    an older one is no progress of this one. Once a stage fails, later stages
    are judged anyway: an older version may still be served.
    """
    upload, head = facts.upload, facts.head
    location = f"s3://{facts.bucket}/{upload.key}"
    if head is None:
        return [Stage("uploaded", False, f"there is no {location}: check the key (letter case, .tif or .TIF) "
                                       "or upload the file")]
    if head.size == 0:
        return [Stage("uploaded", False, f"{location} is empty (0 bytes): upload it again")]
    _, problems = uploads_by_cog(upload.collection, facts.same_cog or [head], max_bytes)
    superseded = {notice.key: notice.reason for notice in problems}.get(upload.key)
    if superseded:
        return [Stage("uploaded", False, superseded)]
    uploaded = Stage("uploaded", True, f"{location}, {head.size:,} bytes, ETag {head.etag}"
                                       + (f", uploaded {utc(head.last_modified)}" if head.last_modified else ""))
    not_failed = _failure_stage(facts, head)
    cog = _cog_stage(facts, head, failed=not not_failed.done)
    row = _row_stage(facts, head, failed=not not_failed.done)
    return [uploaded, not_failed, cog, row, _wms_stage(facts, wms_url, indexed=row.done)]


def _failure_stage(facts: UploadFacts, head: S3Object) -> Stage:
    failure = facts.failure
    if failure is None:
        return Stage("not failed", True, "no failure recorded")
    when = utc(failure.failed)
    if failure.etag != head.etag:
        return Stage("not failed", True, f"an earlier version (ETag {failure.etag}) failed at {when}: "
                                         f"{failure.reason}; this version has not failed")
    return Stage("not failed", False, f"this version failed at {when}: {failure.reason}. Runs leave it alone "
                                      f"until a new version is uploaded; `ls4 reprocess "
                                      f"{facts.upload.collection.name} {facts.upload.key}` tries it again")


def _version_stage(name: str, made_from: str | None, head: S3Object, failed: bool, *, missing: str, other: str,
                   failed_reason: str, done: str) -> Stage:
    """A stage whose product (the COG, the row) is made from some version of the upload (``made_from``:
    that version's ETag; None when there is no product)."""
    if made_from == head.etag:
        return Stage(name, True, done)
    if failed:
        return Stage(name, False, failed_reason)
    return Stage(name, False, missing if made_from is None else other)


def _cog_stage(facts: UploadFacts, head: S3Object, failed: bool) -> Stage:
    cog_key = facts.upload.cog_key
    return _version_stage(
        "cog", facts.cog.etag if facts.cog else None, head, failed,
        missing=f"no COG at {cog_key} yet: the collection's next run makes it (runs start on upload events; "
                "`ls4 status` shows the last run)",
        other=f"{cog_key} was made from another version of the upload (ETag {facts.cog.etag if facts.cog else ''}"
              "): the collection's next run replaces it",
        failed_reason=f"none of this version at {cog_key}: processing it failed (see above)",
        done=f"{cog_key}, made from this version")


def _row_stage(facts: UploadFacts, head: S3Object, failed: bool) -> Stage:
    table = facts.upload.collection.table
    return _version_stage(
        "indexed", facts.row.source_etag if facts.row else None, head, failed,
        missing=f"no row for {facts.upload.cog_key} in the tile index (PostGIS table {table}): the collection's "
                "next run adds it, without raster work when the COG is current",
        other=f"the row in PostGIS table {table} shows another version (ETag "
              f"{facts.row.source_etag if facts.row else ''}): the next run replaces it",
        failed_reason=f"no row of this version in PostGIS table {table}: processing it failed",
        done=f"row in PostGIS table {table}")


def _wms_stage(facts: UploadFacts, wms_url: str, indexed: bool) -> Stage:
    collection = facts.upload.collection
    url = mapfile_url(collection, wms_url)
    if facts.mapfile_generation is None:
        return Stage("served", False, f"no mapfile {collection.mapfile_key} published yet: the collection's next "
                                      "run publishes it")
    if facts.wms_layers is None or collection.name not in facts.wms_layers:
        return Stage("served", False, f"{collection.mapfile_key} is published but MapServer does not serve it at "
                                      f"{url}: the mapfile sync brings it to MapServer (is it running? its log says "
                                      "why it refused a mapfile)")
    if not indexed:
        shows = "an older version of this frame" if facts.row else "the collection without this frame"
        return Stage("served", False, f"the WMS at {url} shows {shows} until its row is in the index")
    if facts.mapfile_generation < facts.table_generation:
        return Stage("served", True, f"at {url} (MapServer reads the rows from the table; the mapfile shows index "
                                     f"generation {facts.mapfile_generation} of {facts.table_generation}, so its "
                                     "extent may not cover this frame until the next run publishes it)")
    return Stage("served", True, f"at {url}")


def stopped_at(stages: list[Stage]) -> Stage | None:
    """The first stage the upload has not passed; None when it is served."""
    return next((stage for stage in stages if not stage.done), None)
