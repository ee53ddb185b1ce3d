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

from ls4_ops.layout import Collection, LayoutError, UploadKey, is_folder_marker, parse_key

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
