"""Daily maintenance: what the bucket and the tile-index database hold that they should not.

The original system's daily job checked that every ``mapfiles/*.map`` had its
PostGIS table and every table its mapfile, and dropped tables and deleted
objects on sight. This one decides from one listing of the bucket and one
look at the database, and takes out of service only what is ls4's own:

* the mapfile and preview page of a collection that has no georef upload
  left, and any other object in ``mapfiles/``, are moved to
  ``quarantine/{run}/`` (copied, then the original deleted);
* the table of such a collection is moved into the schema ``ls4_quarantine``
  under a stamped name;
* with ``LS4_MAINTENANCE_DELETE=true`` those are removed for good instead;
* intermediates under ``ls4-work/`` older than :data:`WORK_KEPT` are deleted:
  only the frame tasks write there, each is made again from its upload, and
  a run that completes deletes its own, so what is left is from failed runs.

Everything else is reported, never touched: uploads outside the layout, COGs
whose georef upload is gone (their collection's run removes those), scans
that are not public-read, a table without its mapfile. Nothing under a
band prefix is ever moved or deleted here.

:func:`decide` is pure (listings in, findings out); :func:`gather` and
:func:`apply` do the I/O with a boto3 S3 client and a SQLAlchemy engine, and
:func:`run` does all three. :func:`summary` renders a report for people;
:meth:`Report.to_dict` for scripts and XCom.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from botocore.exceptions import ClientError
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from ls4_ops import access
from ls4_ops.layout import BAND_PREFIXES, COMPILED_INDEX_KEY, MAPFILE_EXTENSION, MAPFILE_PREFIX, \
    MAX_IDENTIFIER_LENGTH, QUARANTINE_PREFIX, WORK_PREFIX, LayoutError, is_collection_output, is_folder_marker, \
    is_output_key, parse_key, published_collection, quarantine_key, validate_identifier, work_collection
from ls4_ops.plan import OUTSIDE_LAYOUT, S3Object, layout_notice
from ls4_ops.registry import BucketSurvey, survey
from ls4_ops.settings import Settings
from ls4_ops.tileindex import CATALOG, CATALOG_SCHEMA, DDL_LOCK

# Intermediates younger than this may belong to a run in progress, or to a failed
# `cog` task an operator clears after a weekend: they are left alone.
WORK_KEPT = timedelta(days=3)
# A table changed more recently than this may be in the middle of a run (rows
# written, mapfile not yet published; the last upload deleted, rows being removed).
IN_FLIGHT = timedelta(hours=6)
QUARANTINE_SCHEMA = f"{CATALOG_SCHEMA}_quarantine"
STAMP_FORMAT = "%Y%m%d_%H%M%S"
ACL_READS = 8  # GetObjectAcl requests in flight at once

# Kinds of finding, and the subject of their notification.
ORPHAN_MAPFILE = "mapfile without its collection"
NOT_A_MAPFILE = "object in mapfiles/ that is not a mapfile"
TABLE_MISSING = "mapfile without its table"
ORPHAN_TABLE = "tile index table without its collection"
MAPFILE_MISSING = "tile index table without its mapfile"
NO_UPLOADS = "no georef upload in the bucket"
NOT_LS4_OUTPUT = "object under cog/ not made by ls4"
ORPHAN_INTERMEDIATE = "orphaned intermediate"
ORPHAN_COG = "COG without its georef upload"
SCAN_NOT_PUBLIC = "scan not public"
# Findings nobody needs to act on: maintenance deals with them itself.
QUIET = frozenset({ORPHAN_INTERMEDIATE})
# Findings of one kind in one collection notified one by one; more make one notice.
NOTIFIED_EACH = 10

# What maintenance does about a finding.
REPORT = "reported"
MOVE = "moved to quarantine"
DELETE = "deleted"
MOVE_TABLE = "moved to the quarantine schema"
DROP_TABLE = "dropped"
TABLE_ACTIONS = (MOVE_TABLE, DROP_TABLE)

BUCKET_WIDE = ""  # the collection of a finding that belongs to none


@dataclass(frozen=True)
class Finding:
    kind: str  # one of the kinds above; the subject of its notification
    key: str  # the object, or the table
    reason: str  # what is wrong and what to do, in plain words
    collection: str = BUCKET_WIDE
    action: str = REPORT
    target: str = ""  # where a moved object or table goes
    etag: str = ""  # of the object when it was listed: only that version is moved

    @property
    def notify(self) -> bool:
        return self.kind not in QUIET


@dataclass
class Inputs:
    """What maintenance looks at: one listing of the bucket and one look at the database."""

    objects: list[S3Object]
    tables: set[str]  # tables in the public schema
    catalog: dict[str, datetime | None]  # collection tables (ls4's catalog) -> their last change
    public: dict[str, bool] = field(default_factory=dict)  # scan key -> whether anyone may read it


@dataclass
class Report:
    time: datetime
    dry_run: bool
    checked: dict[str, int]
    findings: list[Finding]
    failed: dict[str, str] = field(default_factory=dict)  # key or table -> why its action failed

    def counts(self) -> dict[str, dict[str, int]]:
        """Findings by collection ("" for the bucket at large), then by kind."""
        counts: dict[str, Counter] = defaultdict(Counter)
        for finding in self.findings:
            counts[finding.collection][finding.kind] += 1
        return {collection: dict(sorted(kinds.items())) for collection, kinds in sorted(counts.items())}

    def outcome(self, finding: Finding) -> str:
        """What became of a finding, in words."""
        if finding.action == REPORT:
            return "Nothing was changed"
        if finding.action == MOVE_TABLE:
            done = f"moved to {QUARANTINE_SCHEMA}.{finding.target}"
        else:
            done = f"moved to {finding.target}" if finding.action == MOVE else finding.action
        if self.dry_run:
            return f"Dry run: it would be {done}"
        if finding.key in self.failed:
            return f"It could not be {done}: {self.failed[finding.key]}"
        return f"It was {done}"

    def notices(self) -> list[Finding]:
        """What operators are told: each finding someone must act on, with its outcome; more than
        :data:`NOTIFIED_EACH` of one kind in one collection (scans in a bucket without a
        public policy, say) in one notice."""
        groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
        for finding in self.findings:
            if finding.notify:
                groups[finding.collection, finding.kind].append(finding)
        notices = []
        for (collection, kind), findings in sorted(groups.items()):
            if len(findings) <= NOTIFIED_EACH:
                notices += [dataclasses.replace(f, reason=f"{f.reason}. {self.outcome(f)}") for f in findings]
                continue
            examples = ", ".join(f.key for f in findings[:3])
            # Told again only when the set of objects (or their versions) changes.
            versions = hashlib.sha256(json.dumps(sorted((f.key, f.etag) for f in findings)).encode()).hexdigest()
            notices.append(Finding(kind, findings[0].key, f"{len(findings)} of them in {collection or 'the bucket'}, "
                                   f"e.g. {examples}: {findings[0].reason}. The maintenance run's log lists them all",
                                   collection, etag=versions))
        return notices

    def to_dict(self) -> dict:
        """JSON-able (for XCom and ``ls4 maintenance --json``)."""
        return {"time": self.time.isoformat(timespec="seconds"), "dry_run": self.dry_run,
                "checked": dict(self.checked), "counts": self.counts(),
                "findings": [asdict(finding) for finding in self.findings], "failed": dict(self.failed)}


# --- deciding --------------------------------------------------------------------------------

def scan_keys(objects: Iterable[S3Object]) -> list[str]:
    """The scans in a listing: keys in the layout under a ``scanned/`` folder."""
    scans = []
    for obj in objects:
        if obj.key.startswith(BAND_PREFIXES) and not is_folder_marker(obj.key):
            try:
                if parse_key(obj.key).stage == "scanned":
                    scans.append(obj.key)
            except LayoutError:
                continue
    return scans


def decide(inputs: Inputs, *, now: datetime, delete: bool = False) -> list[Finding]:
    """Everything maintenance finds, each with what it does about it.

    ``delete``: remove orphan mapfiles and tables for good instead of
    quarantining them (``LS4_MAINTENANCE_DELETE``).
    """
    bucket = survey(obj.key for obj in inputs.objects)
    with_uploads = {collection.name for collection in bucket.collections}
    findings = _hygiene(inputs.objects, bucket, inputs.public, now)
    findings += _published(inputs, with_uploads, now, now.strftime(STAMP_FORMAT), delete)
    return sorted(findings, key=lambda f: (f.collection, f.kind, f.key))


def _hygiene(objects: list[S3Object], bucket: BucketSurvey, public: Mapping[str, bool],
             now: datetime) -> list[Finding]:
    """Objects outside the layout, orphaned intermediates, COGs without upload, scans not public."""
    findings = []
    for obj in objects:
        key = obj.key
        if is_folder_marker(key) or key.startswith((MAPFILE_PREFIX, QUARANTINE_PREFIX)) \
                or key == COMPILED_INDEX_KEY:
            continue  # mapfiles/ is _published's
        if key.startswith(WORK_PREFIX):
            if obj.last_modified is not None and now - obj.last_modified > WORK_KEPT:
                findings.append(Finding(
                    ORPHAN_INTERMEDIATE, key, f"left by a run that did not finish, {(now - obj.last_modified).days} "
                    "days ago; an intermediate is made again from its upload when needed",
                    work_collection(key) or BUCKET_WIDE, DELETE, etag=obj.etag))
            continue
        if not key.startswith(BAND_PREFIXES):
            findings.append(Finding(
                OUTSIDE_LAYOUT, key, f"the bucket holds uploads under {' or '.join(BAND_PREFIXES)} and ls4's "
                f"own files under {MAPFILE_PREFIX}, {WORK_PREFIX} and {COMPILED_INDEX_KEY}: move or remove it",
                etag=obj.etag))
            continue
        try:
            upload = parse_key(key)
        except LayoutError as error:
            if is_output_key(key) and is_collection_output(key):
                continue
            if is_output_key(key):
                findings.append(Finding(NOT_LS4_OUTPUT, key, f"{error.reason}; ls4 did not write it, and it is "
                                        "not indexed, served or deleted: move or remove it", etag=obj.etag))
            else:  # told as discovery and the collection's run tell it: once, whoever meets it first
                findings.append(Finding(OUTSIDE_LAYOUT, key, layout_notice(error).reason, etag=obj.etag))
            continue
        if upload.stage == "scanned" and public.get(key) is False:
            findings.append(Finding(
                SCAN_NOT_PUBLIC, key, "anyone must be able to download the original scan (its link is in the "
                "tile index), but neither the bucket policy nor its ACL lets them: add ls4's public-read statement "
                "to the bucket policy (README, Public access), or its public-read ACL where ACLs are used",
                upload.collection.name, etag=obj.etag))
    etags = {obj.key: obj.etag for obj in objects}
    for key in bucket.orphan_cogs():
        findings.append(Finding(
            ORPHAN_COG, key, "its georef upload is gone; the collection's next run removes it and its index row "
            "if ls4 made it (a collection with no georef upload left has no run: remove it by hand)",
            parse_key(key).collection.name, etag=etags[key]))
    return findings


def _published(inputs: Inputs, with_uploads: set[str], now: datetime, stamp: str, delete: bool) -> list[Finding]:
    """Mapfiles and preview pages against the collection tables and the collections with uploads."""
    published: dict[str, list[S3Object]] = defaultdict(list)  # collection -> its mapfile and page
    findings = []
    for obj in inputs.objects:
        if not obj.key.startswith(MAPFILE_PREFIX) or is_folder_marker(obj.key):
            continue
        parsed = published_collection(obj.key)
        if parsed is None:
            findings.append(_taken_out(obj, NOT_A_MAPFILE, f"only mapfiles ({MAPFILE_PREFIX}{{collection}}.map) "
                                       f"and their preview pages belong in {MAPFILE_PREFIX}", BUCKET_WIDE,
                                       stamp, delete))
        else:
            published[parsed[0]].append(obj)
    if not with_uploads and (published or inputs.catalog):
        # More likely a wrong bucket or endpoint than an archive emptied: take nothing out of service.
        return findings + [Finding(NO_UPLOADS, "", "the listing shows no georef upload at all, yet there are "
                                   "mapfiles or tile index tables, so none is taken out of service: check "
                                   "LS4_BUCKET and the S3 connection")]

    for name in sorted(set(published) | set(inputs.catalog)):
        has_table, has_uploads = name in inputs.tables, name in with_uploads
        mapfiles = [obj for obj in published.get(name, []) if obj.key.endswith(MAPFILE_EXTENSION)]
        changed = inputs.catalog.get(name)
        settled = changed is None or now - changed > IN_FLIGHT
        if has_uploads:
            if mapfiles and not has_table:
                findings.append(Finding(TABLE_MISSING, name, f"the WMS of {name} cannot draw without its table; "
                                        f"the next run of ls4_{name} makes it again from the COGs: trigger it",
                                        name))
            elif has_table and name in inputs.catalog and not mapfiles and settled:
                findings.append(Finding(MAPFILE_MISSING, name, f"{name} has no WMS; the next run of ls4_{name} "
                                        "publishes it once the table has a row: trigger it, and look at its "
                                        "last run's failures", name))
            continue
        if has_table and name in inputs.catalog:
            if not settled:
                continue  # a run may be removing its last rows: the next maintenance run decides
            findings.append(Finding(ORPHAN_TABLE, name, "its collection has no georef upload left (its folder was "
                                    "renamed or emptied), so nothing uses it", name, DROP_TABLE if delete else
                                    MOVE_TABLE, "" if delete else quarantine_table(name, stamp)))
        elif has_table:
            continue  # a mapfile naming a table that ls4 does not catalogue: not ls4's to judge
        findings += [_taken_out(obj, ORPHAN_MAPFILE, "its collection has no georef upload left, so its WMS "
                                "serves nothing", name, stamp, delete) for obj in published.get(name, [])]
    return findings


def _taken_out(obj: S3Object, kind: str, reason: str, collection: str, stamp: str, delete: bool) -> Finding:
    """An object of ls4's own that goes to quarantine (or, with ``delete``, goes)."""
    return Finding(kind, obj.key, reason, collection, DELETE if delete else MOVE,
                   "" if delete else quarantine_key(obj.key, stamp), obj.etag)


def quarantine_table(table: str, stamp: str) -> str:
    """The name a table gets in the quarantine schema: its own, stamped with the run."""
    return validate_identifier(f"{table[:MAX_IDENTIFIER_LENGTH - len(stamp) - 1]}_{stamp}")


# --- I/O ---------------------------------------------------------------------------------------

def list_bucket(s3_client, bucket: str) -> list[S3Object]:
    return [S3Object.from_listing(entry) for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for entry in page.get("Contents", [])]


def catalogued_tables(connection: Connection) -> tuple[set[str], dict[str, datetime | None]]:
    """The tables of the public schema, and the collection tables in ls4's catalog with their last change."""
    tables = set(connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
    if connection.execute(text("SELECT to_regclass(:catalog)"), {"catalog": CATALOG}).scalar() is None:
        return tables, {}
    return tables, dict(connection.execute(text(f"SELECT table_name, updated FROM {CATALOG}")).all())


def gather(s3_client, engine: Engine, bucket: str) -> Inputs:
    """List the bucket, look at the database, and find out which scans anyone may read
    (the bucket policy first; the ACL of each scan it does not cover)."""
    objects = list_bucket(s3_client, bucket)
    with engine.connect() as connection:
        tables, catalog = catalogued_tables(connection)
    policy = access.bucket_policy(s3_client, bucket)
    scans = scan_keys(objects)
    public = {key: True for key in scans if access.policy_lets_anyone_read(policy, bucket, key)}

    def acl(key: str) -> bool | None:
        try:
            return access.acl_lets_anyone_read(s3_client.get_object_acl(Bucket=bucket, Key=key)["Grants"])
        except ClientError as error:
            if access.error_code(error) not in ("NoSuchKey", "404", "AccessDenied", "AccessControlListNotSupported"):
                raise
            return None  # deleted since the listing, or its ACL cannot be read: not known to be private

    unknown = [key for key in scans if key not in public]
    with ThreadPoolExecutor(ACL_READS) as pool:
        public.update((key, result) for key, result in zip(unknown, pool.map(acl, unknown)) if result is not None)
    return Inputs(objects=objects, tables=tables, catalog=catalog, public=public)


def apply(report: Report, s3_client, engine: Engine, bucket: str) -> None:
    """Carry out the findings' actions; one that fails is recorded in ``report.failed``,
    and the others go on."""
    for finding in report.findings:
        try:
            if finding.action == MOVE:
                # Only the version that was judged: a copy of anything newer fails (412).
                s3_client.copy_object(Bucket=bucket, Key=finding.target, MetadataDirective="COPY",
                                      CopySource={"Bucket": bucket, "Key": finding.key},
                                      CopySourceIfMatch=f'"{finding.etag}"')
                s3_client.delete_object(Bucket=bucket, Key=finding.key)
            elif finding.action == DELETE:
                s3_client.delete_object(Bucket=bucket, Key=finding.key)
            elif finding.action in TABLE_ACTIONS:
                with engine.begin() as connection:
                    _take_table_out(connection, finding)
        except Exception as error:  # each action stands alone: the report names the one that failed
            report.failed[finding.key] = f"{type(error).__name__}: {error}"


def _take_table_out(connection: Connection, finding: Finding) -> None:
    quote = connection.dialect.identifier_preparer.quote
    table = quote(validate_identifier(finding.key))
    # The lock collections take to create their tables: none is made while this one goes.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:lock))"), {"lock": DDL_LOCK})
    if finding.action == DROP_TABLE:
        connection.execute(text(f"DROP TABLE public.{table}"))
        return
    # The catalog entry stays: should the collection come back, its generations go on
    # counting up, so nothing published for the old table looks current.
    target = quote(validate_identifier(finding.target))
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {QUARANTINE_SCHEMA}"))
    connection.execute(text(f"ALTER TABLE public.{table} RENAME TO {target}"))
    connection.execute(text(f"ALTER TABLE public.{target} SET SCHEMA {QUARANTINE_SCHEMA}"))


def run(s3_client, engine: Engine, settings: Settings, *, dry_run: bool = False,
        now: datetime | None = None) -> Report:
    """One maintenance run on ``settings.bucket`` and the tile-index database ``engine``:
    gather, decide, and (unless ``dry_run``) apply. Sends no notification (see
    :meth:`Report.notices`)."""
    now = now or datetime.now(timezone.utc)
    inputs = gather(s3_client, engine, settings.bucket)
    findings = decide(inputs, now=now, delete=settings.maintenance_delete)
    checked = {"objects": len(inputs.objects), "tables": len(inputs.catalog), "scans": len(inputs.public)}
    report = Report(time=now, dry_run=dry_run, checked=checked, findings=findings)
    if not dry_run:
        apply(report, s3_client, engine, settings.bucket)
    return report


# --- the summary -------------------------------------------------------------------------------

LISTED = 10  # findings listed by name per collection and kind; the rest are counted


def summary(report: Report) -> str:
    """The run for people: counts by collection and kind, and the findings themselves."""
    when = report.time.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"ls4 maintenance, {when}" + (" (dry run: nothing was changed)" if report.dry_run else ""),
             "checked " + ", ".join(f"{count} {what}" for what, count in report.checked.items())]
    if not report.findings:
        return "\n".join([*lines, "nothing to report"])
    by_group: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for finding in report.findings:
        by_group[finding.collection, finding.kind].append(finding)
    collection = None
    for (name, kind), findings in sorted(by_group.items()):
        if name != collection:
            collection = name
            lines.append(f"{name or 'bucket'}:")
        actions = Counter(finding.action for finding in findings)
        lines.append(f"  {kind}: {len(findings)} (" + ", ".join(
            f"{count} {'would be ' if report.dry_run and action != REPORT else ''}{action}"
            for action, count in sorted(actions.items())) + ")")
        for finding in findings[:LISTED]:
            failed = report.failed.get(finding.key)
            lines.append(f"    {finding.key or '-'}: {finding.reason}"
                         + (f" -> {finding.target}" if finding.target else "")
                         + (f" [FAILED: {failed}]" if failed else ""))
        if len(findings) > LISTED:
            lines.append(f"    ... and {len(findings) - LISTED} more")
    total = Counter(finding.kind for finding in report.findings)
    lines.append("total: " + ", ".join(f"{count} {kind}" for kind, count in sorted(total.items()))
                 + (f"; {len(report.failed)} actions FAILED" if report.failed else ""))
    return "\n".join(lines)
