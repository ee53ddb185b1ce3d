"""What a collection run must do, decided from one look at the bucket and the index.

Raster work: an upload needs it when its COG is missing or was made from
another version of it (the COG carries the source ETag in its metadata, and
its index row carries it too). A manual run reprocesses what an operator
names (``keys``) or the whole collection (``force``).

Index work, which needs no raster work: a current COG without its row (the
index step failed after the COG was written), a row whose scan link changed,
a COG and row whose upload was deleted, and a shapefile or mapfile behind
the table. Any run finds such work left undone and finishes it; a run with
nothing new finds none and does nothing.

The functions here return decisions (what to process, index, delete, make
public, notify); operators gather the inputs and carry the decisions out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

from ls4_ops.layout import Collection, LayoutError, OriginalScans, frame_attributes, georef_key, \
    is_folder_marker, needs_scan, parse_key
from ls4_ops.settings import Settings
from ls4_ops.tileindex import IndexedCog, scan_link

SOURCE_ETAG_METADATA = "ls4-source-etag"
SOURCE_KEY_METADATA = "ls4-source-key"
NOT_PROCESSED = "upload not processed"


@dataclass(frozen=True)
class S3Object:
    key: str
    etag: str
    size: int
    last_modified: datetime | None = None

    @classmethod
    def from_listing(cls, entry: Mapping) -> "S3Object":
        return cls(entry["Key"], entry["ETag"].strip('"'), entry["Size"], entry.get("LastModified"))

    def changed_since(self, since: datetime | None) -> bool:
        """Whether this object changed after ``since`` (the previous successful run's start).

        Problems with older objects were reported by that run already. S3
        listings give whole seconds: an object from the second that run began
        counts as changed (reported twice at worst, never missed).
        """
        if since is None or self.last_modified is None:
            return True
        return self.last_modified >= since.replace(microsecond=0)


@dataclass(frozen=True)
class CogSource:
    """What a COG's own metadata says: the upload version it was made from.

    Both are empty for an object under ``cog/`` that ls4 did not write.
    """

    etag: str
    key: str

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> "CogSource":
        return cls(metadata.get(SOURCE_ETAG_METADATA, ""), metadata.get(SOURCE_KEY_METADATA, ""))

    @property
    def made_by_ls4(self) -> bool:
        return bool(self.key)


@dataclass(frozen=True)
class RunRequest:
    """What a run asks for: the uploads named in ``keys``, everything (``force``), or what changed."""

    keys: tuple[str, ...] = ()
    force: bool = False


CONF_EXAMPLE = '{"keys": ["<georef key or file name>", ...]} or {"force": true}'


def run_request(collection: Collection, bucket: str, keys: object, force: object) -> RunRequest:
    """Check a run's ``dag_run.conf`` values; raise ValueError saying what is wrong.

    A key may be given as the georef key, as ``s3://{bucket}/{key}``, or as
    the file name alone (taken from the collection's ``georef/`` folder).
    """
    if keys is None or keys == "":
        keys = []
    elif isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or not all(isinstance(key, str) and key for key in keys):
        raise ValueError(f"conf 'keys' must be a list of keys, not {keys!r}; e.g. {CONF_EXAMPLE}")
    if isinstance(force, str) and force.lower() in ("true", "false"):
        force = force.lower() == "true"
    if not isinstance(force, bool):
        raise ValueError(f"conf 'force' must be true or false, not {force!r}; e.g. {CONF_EXAMPLE}")
    return RunRequest(tuple(dict.fromkeys(georef_key(collection, key, bucket) for key in keys)), force)


@dataclass
class CollectionState:
    """What one look at the bucket and the index shows of a collection."""

    georef: list[S3Object]
    scanned: dict[str, S3Object] = field(default_factory=dict)  # scans by key
    cogs: dict[str, S3Object] = field(default_factory=dict)  # COGs by key (tile-index files left out)
    indexed: Mapping[str, IndexedCog] = field(default_factory=dict)  # index rows by COG key
    generation: int = 0  # of the index table
    overview_generation: int = 0  # the generation the collection overview shows
    # Generation the published shapefile zip, mapfile and preview page show (None: not
    # published, or a mapfile of an older format).
    published_index: int | None = None
    published_mapfile: int | None = None
    published_preview: int | None = None
    # HEADs of the COGs that cogs_to_inspect() names (None: gone since the listing).
    sources: Mapping[str, CogSource | None] = field(default_factory=dict)
    # Uploads that failed for a reason inside the file, and the ETag of the version that did.
    failed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Notice:
    subject: str
    reason: str
    key: str
    etag: str = ""  # of the object it is about: the same notice for another version is news
    collection: str = ""  # when the key does not name it (a table, a mapfile)


OUTSIDE_LAYOUT = "upload outside the bucket layout"


def layout_notice(error: LayoutError, etag: str = "") -> Notice:
    """An upload whose key does not fit the layout: discovery and the collection's run
    both meet it, and say the same (so it is sent once)."""
    return Notice(OUTSIDE_LAYOUT, error.reason + ": move it to the right folder", error.key, etag)


@dataclass
class IndexWork:
    """Index work that needs no raster work. Items are JSON-able (they travel by XCom)."""

    add: list[dict] = field(default_factory=list)  # current COGs without their row: plan items + "cog_etag"
    scan_links: dict[str, str] = field(default_factory=dict)  # COG key -> new dl_orig
    remove: list[dict] = field(default_factory=list)  # {"cog_key", "source_key", "source_etag", "delete_cog"}
    publish: bool = False  # the shapefile, the overview, the mapfile or the preview is behind the table
    published_index: int | None = None  # the generation the shapefile showed when planned

    def __bool__(self) -> bool:
        return bool(self.add or self.scan_links or self.remove or self.publish)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    todo: list[dict]  # raster work: {"key", "etag", "cog_key", "scan"}
    up_to_date: list[str]
    problems: list[Notice]  # uploads that cannot be processed: what is wrong and what to do
    # Uploads whose version failed already for a reason inside the file: left alone until they change.
    known_bad: list[str] = field(default_factory=list)
    # Keys a manual run asked for that cannot be processed, and why.
    not_found: list[tuple[str, str]] = field(default_factory=list)
    index: IndexWork = field(default_factory=IndexWork)
    make_public: list[str] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    seen: int = 0  # georef uploads in the listing
    not_requested: int = 0  # uploads a manual run did not name

    @property
    def has_work(self) -> bool:
        return bool(self.todo or self.index)

    def unprocessed(self) -> dict:
        """What the run leaves unprocessed, and the counts its report accounts for every upload
        with (JSON-able: it travels by XCom)."""
        return {"problems": {notice.key: notice.reason for notice in self.problems}, "known_bad": self.known_bad,
                "seen": self.seen, "up_to_date": len(self.up_to_date), "not_requested": self.not_requested}


def uploads_by_cog(collection: Collection, georef: Iterable[S3Object],
                   max_bytes: int | None = None) -> tuple[dict[str, S3Object], list[Notice]]:
    """The upload each COG is made from, and a notice for each upload that cannot be processed
    (``max_bytes``: the largest upload taken).

    Of two uploads making the same COG (``a.tif`` and ``a.TIF``), the newer wins.
    """
    by_cog: dict[str, S3Object] = {}
    problems: list[Notice] = []

    def problem(obj: S3Object, reason: str) -> None:
        problems.append(Notice(NOT_PROCESSED, reason, obj.key, obj.etag))

    for obj in sorted(georef, key=lambda o: (o.last_modified is None, o.last_modified or 0, o.key)):
        if is_folder_marker(obj.key):
            continue
        try:
            upload = parse_key(obj.key)
        except LayoutError as error:
            problems.append(layout_notice(error, obj.etag))
            continue
        if upload.collection != collection or upload.stage != "georef":
            problem(obj, f"not a georef upload of {collection.name}")
            continue
        if obj.size == 0:
            problem(obj, "the file is empty (0 bytes): upload it again")
            continue
        if max_bytes is not None and obj.size > max_bytes:
            problem(obj, f"the file is {obj.size / 2**30:,.1f} GiB, more than ls4 takes ({max_bytes / 2**30:,.1f} GiB, "
                         "LS4_MAX_UPLOAD_BYTES): split it, or raise the limit")
            continue
        if upload.cog_key in by_cog:
            older = by_cog[upload.cog_key]
            problem(older, f"{older.key} and {obj.key} both make {upload.cog_key}; the newer "
                           f"upload {obj.key} is used: rename or remove {older.key}")
        by_cog[upload.cog_key] = obj
    return by_cog, problems


def cogs_to_inspect(collection: Collection, state: CollectionState) -> list[str]:
    """COGs whose metadata a HEAD must read: those the index does not show as made
    from their current upload, and those whose upload is gone. An unchanged
    collection has none."""
    uploads, _ = uploads_by_cog(collection, state.georef)
    inspect = []
    for cog_key in state.cogs:
        upload, row = uploads.get(cog_key), state.indexed.get(cog_key)
        if upload is None or row is None or row.source_etag != upload.etag:
            inspect.append(cog_key)
    return sorted(inspect)


def plan_run(collection: Collection, state: CollectionState, request: RunRequest = RunRequest(), *,
             since: datetime | None = None, settings: Settings = Settings()) -> Plan:
    """Everything a run must do. ``since``: when the previous successful run began
    (what changed before it was reported then); a forced run reports everything again."""
    uploads, problems = uploads_by_cog(collection, state.georef, settings.max_upload_bytes)
    scans = OriginalScans(state.scanned)
    report_all = request.force or since is None

    def is_new(obj: S3Object | None) -> bool:
        return report_all or obj is None or obj.changed_since(since)

    def item(cog_key: str, obj: S3Object) -> dict:
        scan = scans.find(parse_key(obj.key)) if needs_scan(collection) else None
        return {"key": obj.key, "etag": obj.etag, "cog_key": cog_key, "scan": scan or ""}

    def made_from(cog_key: str) -> str | None:
        """ETag of the upload the existing COG was made from; None when there is no COG."""
        if cog_key not in state.cogs:
            return None
        if cog_key in state.sources:
            source = state.sources[cog_key]
            return source.etag if source else None
        row = state.indexed.get(cog_key)  # not inspected: the row is current
        return row.source_etag if row else None

    wanted = set(request.keys)
    usable = {obj.key for obj in uploads.values()}
    reasons = {notice.key: notice.reason for notice in problems}
    plan = Plan(todo=[], up_to_date=[], problems=problems, not_found=[
        (key, reasons.get(key, f"there is no such georef upload of {collection.name}"))
        for key in request.keys if key not in usable])
    plan.seen = len({obj.key for obj in state.georef if not is_folder_marker(obj.key)})
    for cog_key, obj in sorted(uploads.items()):
        if wanted and obj.key not in wanted:
            plan.not_requested += 1
            continue
        current = made_from(cog_key) == obj.etag
        if not (wanted or request.force or current) and state.failed.get(obj.key) == obj.etag:
            plan.known_bad.append(obj.key)
            continue
        if wanted or request.force or not current:
            plan.todo.append(item(cog_key, obj))
            continue
        plan.up_to_date.append(obj.key)
        row, current_item = state.indexed.get(cog_key), item(cog_key, obj)
        link = scan_link(settings, current_item["scan"])
        if row is None or row.source_etag != obj.etag:
            plan.index.add.append({**current_item, "cog_etag": state.cogs[cog_key].etag})
        elif row.dl_orig != link:
            plan.index.scan_links[cog_key] = link

    _plan_removals(state, uploads, plan, is_new)
    plan.index.published_index = state.published_index
    served = (state.published_mapfile, state.published_preview) if state.indexed else ()
    plan.index.publish = any(shown != state.generation for shown in (
        state.published_index, state.overview_generation, *served))

    planned = {entry["key"] for entry in plan.todo}
    plan.make_public = [obj.key for obj in state.scanned.values() if is_new(obj)] + [
        obj.key for obj in uploads.values() if obj.key in planned and is_new(obj)]
    by_key = {obj.key: obj for obj in state.georef}
    plan.notices += [notice for notice in problems if is_new(by_key.get(notice.key))]
    return plan


def _plan_removals(state: CollectionState, uploads: Mapping[str, S3Object], plan: Plan, is_new) -> None:
    """COGs and rows whose upload is gone go; objects ls4 did not write are reported, never deleted."""
    for cog_key, obj in sorted(state.cogs.items()):
        if cog_key in uploads:
            continue
        source = state.sources.get(cog_key)
        if source is None:
            continue  # deleted since the listing
        if source.made_by_ls4 or cog_key in state.indexed:
            plan.index.remove.append({"cog_key": cog_key, "source_key": source.key,
                                      "source_etag": source.etag, "delete_cog": source.made_by_ls4})
        if not source.made_by_ls4 and is_new(obj):
            plan.notices.append(Notice(
                "object under cog/ not made by ls4", "it is not a COG ls4 wrote (no source upload in its "
                "metadata), so it is not indexed, served or deleted; uploads go under georef/: move or "
                "remove it", cog_key, obj.etag))
    for cog_key in sorted(set(state.indexed) - set(uploads) - set(state.cogs)):
        plan.index.remove.append({"cog_key": cog_key, "source_key": "",
                                  "source_etag": state.indexed[cog_key].source_etag, "delete_cog": False})


@dataclass
class RunReport:
    """What a run did with its uploads: processed, and not processed with the reason; and the
    account of every upload the run saw."""

    processed: list[dict]  # the plan's items whose current COG is in the index
    not_processed: dict[str, str]  # key -> why (failed in this run, failed before, cannot be)
    seen: int = 0  # georef uploads in the listing
    indexed: int = 0  # of those, with their current COG in the index (processed now or before)
    not_requested: int = 0  # not named by a manual run

    @property
    def lost(self) -> int:
        """Uploads the account cannot place: neither indexed, nor told why not, nor left out on purpose."""
        return self.seen - self.indexed - len(self.not_processed) - self.not_requested

    @property
    def clean(self) -> bool:
        return not self.not_processed and self.lost == 0

    @property
    def accounting(self) -> str:
        line = f"{self.seen} uploads seen = {self.indexed} indexed + {len(self.not_processed)} not processed"
        if self.not_requested:
            line += f" + {self.not_requested} not asked for"
        return line + (f"; {self.lost} UNACCOUNTED FOR" if self.lost else "")

    @property
    def text(self) -> str:
        done = f"{len(self.processed)} upload{'s' if len(self.processed) != 1 else ''} processed ({self.accounting})"
        if not self.not_processed:
            return done
        return (f"{done}; {len(self.not_processed)} left unprocessed: "
                + "; ".join(f"{key}: {reason}" for key, reason in sorted(self.not_processed.items())))


def report_run(planned: list[dict], indexed: Mapping[str, IndexedCog], unprocessed: Mapping,
               reasons: Mapping[str, str]) -> RunReport:
    """The run's outcome: which planned uploads have their current COG in the index, and why
    each other upload is unprocessed. ``unprocessed``: :meth:`Plan.unprocessed`;
    ``reasons``: the recorded failures of uploads (failures.reasons)."""
    processed, not_processed = [], {}
    for item in planned:
        row = indexed.get(item["cog_key"])
        if row is not None and row.source_etag == item["etag"]:
            processed.append(item)
        else:
            not_processed[item["key"]] = reasons.get(item["key"], "its task failed: see the task log in Airflow "
                                                                  "and the notification")
    for key in unprocessed.get("known_bad", []):
        not_processed[key] = (f"{reasons.get(key, 'it failed before')}; left alone until a new version is "
                              "uploaded (or a manual run names it)")
    not_processed.update(unprocessed.get("problems", {}))
    return RunReport(processed, not_processed, seen=unprocessed.get("seen", 0),
                     indexed=unprocessed.get("up_to_date", 0) + len(processed),
                     not_requested=unprocessed.get("not_requested", 0))


def processed_notices(collection: Collection, processed: list[dict]) -> list[Notice]:
    """What uploaders are told about frames that were processed: a missing scan, an odd name.
    Only once processed: an unreadable upload is told that, and nothing else."""
    notices = []
    for entry in processed:
        upload = parse_key(entry["key"])
        if needs_scan(collection) and not entry["scan"]:
            notices.append(Notice(
                "original scan missing", f"no original scan at {' or '.join(upload.scanned_candidates())}; "
                "the georef upload is processed, upload the scan so its download link works", entry["key"],
                entry["etag"]))
        attributes = frame_attributes(collection, upload.stem)
        if not attributes.parsed:
            notices.append(Notice("file name not understood", attributes.problem + "; it is processed anyway, "
                                  "rename it to fill them in", entry["key"], entry["etag"]))
    return notices


def removal_notice(collection: Collection, removed: Mapping) -> Notice:
    """What operators and uploaders are told when a COG goes with its upload."""
    upload = removed["source_key"] or f"the georef upload of {removed['cog_key']}"
    return Notice("georef upload deleted",
                  f"{upload} is no longer in the bucket, so its COG {removed['cog_key']} and its row of the "
                  f"{collection.name} tile index were removed; upload it again to bring the frame back",
                  removed["source_key"] or removed["cog_key"], removed.get("source_etag", ""))
