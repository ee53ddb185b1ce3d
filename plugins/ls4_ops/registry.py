"""The registry of known collections: in PostGIS, where every host reaches it, and
in a local cache file that the DAG factory reads at parse time.

Discovery and the router write the table ``ls4.collections`` (:func:`update`),
holding a lock so that two writers never register two folders under one name.
A DAG processor or worker, on any host, reads its own cache file
(``LS4_REGISTRY``) and refreshes it from the table once it is older than
``LS4_REGISTRY_MAX_AGE_S`` (:func:`current`): one small query on a short
timeout, so parsing stays fast. If PostGIS does not answer, or has no
registry yet, the last known list stays: a database blip must not make the
DAG processor drop every collection's DAG. The cache file is rewritten
atomically, so a parser never sees half of it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ls4_ops.layout import Collection, LayoutError, UploadKey, is_folder_marker, is_output_key, parse_key
from ls4_ops.plan import Notice, S3Object, layout_notice
from ls4_ops.settings import Settings, postgis_url
from ls4_ops.tileindex import CATALOG_SCHEMA, create_once

log = logging.getLogger(__name__)

TABLE = f"{CATALOG_SCHEMA}.collections"
_DDL = "name text PRIMARY KEY, entry jsonb NOT NULL, registered timestamptz NOT NULL DEFAULT now()"
# A parse-time refresh gives up after these (the last known list stays).
REFRESH_CONNECT_TIMEOUT_S = 2
REFRESH_STATEMENT_TIMEOUT_MS = 2000


def _valid(entries: Mapping[str, dict], source: str) -> dict[str, Collection]:
    """Registered collections by name; an entry that is not a valid collection
    (a hand edit gone wrong) is logged and skipped, so the others keep their DAGs."""
    collections = {}
    for name, entry in sorted(entries.items()):
        try:
            collection = Collection.from_dict(entry)
        except (LayoutError, KeyError, TypeError) as error:
            log.warning("registry %s: entry %r skipped, it is not a collection: %r", source, name, error)
            continue
        collections[collection.name] = collection
    return collections


def load(path: str) -> dict[str, Collection]:
    """The collections in the cache file ``path`` (none when there is no such file)."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    return _valid(data["collections"], path)


def save(path: str, collections: Iterable[Collection]) -> None:
    data = {"collections": {c.name: c.to_dict() for c in sorted(collections)}}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(handle.name, path)


def fetch(connection: Connection) -> dict[str, Collection] | None:
    """The collections registered in PostGIS; None where it has no registry yet."""
    if connection.execute(text("SELECT to_regclass(:table)"), {"table": TABLE}).scalar() is None:
        return None
    rows = connection.execute(text(f"SELECT name, entry FROM {TABLE}"))
    return _valid(dict(rows.tuples().all()), TABLE)


def store(connection: Connection, collections: Iterable[Collection]) -> None:
    """Register ``collections`` in PostGIS; a name registered already keeps its entry."""
    rows = [{"name": c.name, "entry": json.dumps(c.to_dict(), sort_keys=True)} for c in collections]
    create_once(connection, TABLE, _DDL)
    if rows:
        connection.execute(text(f"INSERT INTO {TABLE} (name, entry) VALUES (:name, CAST(:entry AS jsonb)) "
                                "ON CONFLICT (name) DO NOTHING"), rows)


def update(connection: Connection, cache_path: str,
           decide: Callable[[Mapping[str, Collection]], Discovery]) -> tuple[Discovery, dict[str, Collection]]:
    """Decide a discovery or routing run on the registered collections and register
    what it found new, in the caller's transaction; returns the decision and every
    registered collection.

    The registry stays locked against other writers until the transaction ends
    (discovery and the router may run at once). Where PostGIS has no registry
    yet, the one kept before it had one (the local file ``cache_path``) is
    what is known, and goes into PostGIS with what is new.
    """
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:lock))"), {"lock": TABLE})
    stored = fetch(connection)
    known = load(cache_path) if stored is None else stored
    found = decide(known)
    registered = dict(known) if found.registry is None else found.registry
    if stored is None or found.new:
        store(connection, registered.values() if stored is None else [registered[name] for name in found.new])
    return found, registered


def refresh_due(cache_mtime: float | None, now: float, max_age_s: float) -> bool:
    """Whether the cache (last written or tried at ``cache_mtime``; None: there is none)
    must be refreshed from PostGIS."""
    return cache_mtime is None or not 0 <= now - cache_mtime < max_age_s


def _fetch_quickly(environ: Mapping[str, str]) -> dict[str, Collection] | None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(postgis_url(environ), poolclass=NullPool, connect_args={
        "connect_timeout": REFRESH_CONNECT_TIMEOUT_S,
        "options": f"-c statement_timeout={REFRESH_STATEMENT_TIMEOUT_MS}"})
    try:
        with engine.connect() as connection:
            return fetch(connection)
    finally:
        engine.dispose()


def current(settings: Settings, environ: Mapping[str, str] = os.environ,
            now: Callable[[], float] = time.time) -> dict[str, Collection]:
    """The registered collections, as the DAG factory reads them at parse time: the cache
    file, refreshed from PostGIS when it is older than ``settings.registry_max_age_s``.

    Where PostGIS (``LS4_PG_*``) does not answer in a couple of seconds, or has no
    registry yet, the cache's list stays, and the next try waits as long as a refresh.
    """
    from sqlalchemy.exc import SQLAlchemyError

    path = settings.registry_path
    try:
        cache_mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        cache_mtime = None
    if not refresh_due(cache_mtime, now(), settings.registry_max_age_s):
        return load(path)
    try:
        fetched = _fetch_quickly(environ)
    except (SQLAlchemyError, KeyError) as error:
        log.warning("registry: could not read it from PostGIS (%s: %s); the last known collections stay",
                    type(error).__name__, str(error).partition("\n")[0])
        fetched = None
    if fetched is None:
        if cache_mtime is not None:
            os.utime(path)
        return load(path)
    save(path, fetched.values())
    return fetched


@dataclass(frozen=True)
class NameClash:
    """A collection left unregistered: another folder already has its name."""

    collection: Collection
    holder: Collection

    @property
    def reason(self) -> str:
        return (f"the collection in {self.collection.root} would be named {self.collection.name!r}, "
                f"which {self.holder.root} already has (a collection name is county_agency_year_type, "
                "without the band): rename one of the folders")


def register(known: Mapping[str, Collection],
             found: Iterable[Collection]) -> tuple[dict[str, Collection], list[NameClash]]:
    """Add ``found`` to the ``known`` collections.

    A name stays with the collection that has it; the DAG id, PostGIS table
    and mapfile all derive from it, so a second folder with the same name is
    not registered but reported.
    """
    registered = dict(known)
    clashes = []
    for collection in sorted(found):
        holder = registered.setdefault(collection.name, collection)
        if holder != collection:
            clashes.append(NameClash(collection, holder))
    return registered, clashes


@dataclass
class BucketSurvey:
    """What one listing of the bucket says about collections, read in one pass."""

    georef: dict[Collection, list[str]] = field(default_factory=dict)  # georef upload keys by collection
    cogs: list[UploadKey] = field(default_factory=list)

    @property
    def collections(self) -> set[Collection]:
        """Collections with at least one georef upload."""
        return set(self.georef)

    def orphan_cogs(self) -> list[str]:
        """COGs whose georef upload is gone."""
        made_from = {parse_key(key).cog_key for keys in self.georef.values() for key in keys}
        return [cog.key for cog in self.cogs if cog.key not in made_from]


def survey(keys: Iterable[str]) -> BucketSurvey:
    """Parse every key once: the collections with georef uploads, and the COGs."""
    result = BucketSurvey()
    for key in keys:
        if is_folder_marker(key):
            continue
        try:
            upload = parse_key(key)
        except LayoutError:
            continue  # decide() reports it when it is new
        if upload.stage == "georef":
            result.georef.setdefault(upload.collection, []).append(key)
        elif upload.stage == "cog":
            result.cogs.append(upload)
    return result


@dataclass
class Discovery:
    """What a discovery or routing run does: the registry to save (None: unchanged),
    the scans to make public-read, the notices to send, and the collections whose
    DAG must run (by name, with the keys that changed)."""

    collections: set[Collection]
    registry: dict[str, Collection] | None
    new: list[str]
    make_public: list[str]
    notices: list[Notice]
    changed: dict[str, list[str]] = field(default_factory=dict)


def decide(known: Mapping[str, Collection], with_georef: Iterable[Collection], changed_keys: Iterable[str],
           removed_keys: Iterable[str] = (), etags: Mapping[str, str] | None = None) -> Discovery:
    """What follows from ``changed_keys`` (uploaded or replaced) and ``removed_keys``.
    ``etags``: the changed objects' ETags, where known (a notice is about that version).

    ``with_georef``: collections known to have a georef upload now; they are
    registered (a clash of names is reported instead). A change to a
    registered collection's uploads, or a COG left without its upload, makes
    its DAG run; a new scan of a collection that has no DAG is made
    public-read here (its DAG does it once it has one); a new key outside the
    layout is reported. ls4's own outputs are not changes.
    """
    etags = etags or {}
    registered, clashes = register(known, with_georef)
    clashed = {clash.collection for clash in clashes}
    changed: dict[str, list[str]] = {}
    make_public, problems = [], []
    for key, removed in [*((key, False) for key in changed_keys), *((key, True) for key in removed_keys)]:
        if is_folder_marker(key):
            continue
        try:
            upload = parse_key(key)
        except LayoutError as error:
            if not removed and not is_output_key(key):
                problems.append(error)
            continue
        collection = upload.collection
        if collection in clashed:
            continue
        if registered.get(collection.name) == collection and (upload.stage != "cog" or removed):
            changed.setdefault(collection.name, []).append(key)
        elif upload.stage == "scanned" and not removed:
            make_public.append(key)
    notices = [layout_notice(problem, etags.get(problem.key, "")) for problem in problems]
    notices += [Notice("collection not registered", clash.reason, key, etags.get(key, ""))
                for clash in clashes for key in changed_keys if key.startswith(clash.collection.prefix("georef"))]
    new = sorted(set(registered) - set(known))
    return Discovery(collections=set(with_georef), registry=registered if new else None, new=new,
                     make_public=make_public, notices=notices, changed=changed)


def discover(objects: Iterable[S3Object], known: Mapping[str, Collection],
             since: datetime | None, start_runs: bool = True) -> Discovery:
    """Decide a discovery run from a listing of ``bw/`` and ``nc/``.

    ``since``: when the previous successful run began; objects older than
    that were reported, made public and sent to their collection's run by it,
    so only newer ones are. A COG whose upload is gone is a change until its
    collection's run has removed it. No run is started where ``start_runs``
    is false (the bucket's events start them), nor by a first discovery run:
    every collection's DAG runs when it first appears.
    """
    objects = {obj.key: obj for obj in objects}
    bucket = survey(objects)
    changed = [key for key, obj in objects.items() if obj.changed_since(since) and not is_output_key(key)]
    found = decide(known, bucket.collections, changed, bucket.orphan_cogs(),
                   {key: objects[key].etag for key in changed})
    if not start_runs or since is None:
        found.changed = {}
    return found
