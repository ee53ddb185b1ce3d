"""The registry of known collections, read by the DAG factory at parse time.

A small JSON file: reading it makes no network call (Airflow's top-level
code rule), and it is rewritten atomically so a parser never sees half of it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ls4_ops.layout import Collection, LayoutError, UploadKey, is_folder_marker, is_output_key, parse_key
from ls4_ops.plan import Notice, S3Object

log = logging.getLogger(__name__)


def load(path: str) -> dict[str, Collection]:
    """Registered collections by name; an entry that is not a valid collection
    (a hand edit gone wrong) is logged and skipped, so the others keep their DAGs."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    collections = {}
    for name, entry in sorted(data["collections"].items()):
        try:
            collection = Collection.from_dict(entry)
        except (LayoutError, KeyError, TypeError) as error:
            log.warning("registry %s: entry %r skipped, it is not a collection: %r", path, name, error)
            continue
        collections[collection.name] = collection
    return collections


def save(path: str, collections: Iterable[Collection]) -> None:
    data = {"collections": {c.name: c.to_dict() for c in sorted(collections)}}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(handle.name, path)


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
    problems: list[LayoutError] = field(default_factory=list)  # keys that do not fit the layout
    scans: list[UploadKey] = field(default_factory=list)

    @property
    def collections(self) -> set[Collection]:
        """Collections with at least one georef upload."""
        return set(self.georef)

    def scans_without_georef(self) -> list[str]:
        """Scanned uploads of collections that have no georef upload.

        A collection's DAG makes its scans public-read when it plans a run, and
        it only plans once a georef upload exists; these scans are left to
        discovery.
        """
        return [scan.key for scan in self.scans if scan.collection not in self.georef]


def survey(keys: Iterable[str]) -> BucketSurvey:
    """Parse every key once: collections with georef uploads, scans, and keys that do not fit."""
    result = BucketSurvey()
    for key in keys:
        if is_folder_marker(key):
            continue
        try:
            upload = parse_key(key)
        except LayoutError as error:
            result.problems.append(error)
            continue
        if upload.stage == "georef":
            result.georef.setdefault(upload.collection, []).append(key)
        elif upload.stage == "scanned":
            result.scans.append(upload)
    return result


@dataclass
class Discovery:
    """What a discovery run does: the registry to save (None: unchanged), the
    scans to make public-read, and the notices to send."""

    collections: set[Collection]
    registry: dict[str, Collection] | None
    new: list[str]
    make_public: list[str]
    notices: list[Notice]


def discover(objects: Iterable[S3Object], known: Mapping[str, Collection],
             since: datetime | None) -> Discovery:
    """Decide a discovery run from a listing of ``bw/`` and ``nc/``.

    ``since``: when the previous successful run began; objects older than
    that were reported and made public by it, so only newer ones are.
    """
    objects = {obj.key: obj for obj in objects}
    bucket = survey(objects)

    def is_new(key: str) -> bool:
        return key not in objects or objects[key].changed_since(since)

    notices = [Notice("upload outside the bucket layout", problem.reason + ": move it to the right folder",
                      problem.key)
               for problem in bucket.problems if not is_output_key(problem.key) and is_new(problem.key)]
    registered, clashes = register(known, bucket.collections)
    notices += [Notice("collection not registered", clash.reason, key)
                for clash in clashes for key in bucket.georef[clash.collection] if is_new(key)]
    new = sorted(set(registered) - set(known))
    return Discovery(collections=bucket.collections, registry=registered if new else None, new=new,
                     make_public=[key for key in bucket.scans_without_georef() if is_new(key)], notices=notices)
