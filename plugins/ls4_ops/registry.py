"""The registry of known collections, read by the DAG factory at parse time.

A small JSON file: reading it makes no network call (Airflow's top-level
code rule), and it is rewritten atomically so a parser never sees half of it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from ls4_ops.layout import Collection, LayoutError, UploadKey, parse_key


def load(path: str) -> dict[str, Collection]:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    return {name: Collection.from_dict(entry) for name, entry in sorted(data["collections"].items())}


def save(path: str, collections: Iterable[Collection]) -> None:
    data = {"collections": {c.name: c.to_dict() for c in sorted(collections)}}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(handle.name, path)


@dataclass
class BucketSurvey:
    """What one listing of the bucket says about collections, read in one pass."""

    collections: set[Collection] = field(default_factory=set)  # those with georef uploads
    problems: list[LayoutError] = field(default_factory=list)  # keys that do not fit the layout
    scans: list[UploadKey] = field(default_factory=list)

    def scans_without_georef(self) -> list[str]:
        """Scanned uploads of collections that have no georef upload.

        A collection's DAG makes its scans public-read when it plans a run, and
        it only plans once a georef upload exists; these scans are left to
        discovery.
        """
        return [scan.key for scan in self.scans if scan.collection not in self.collections]


def survey(keys: Iterable[str]) -> BucketSurvey:
    """Parse every key once: collections with georef uploads, scans, and keys that do not fit."""
    result = BucketSurvey()
    for key in keys:
        try:
            upload = parse_key(key)
        except LayoutError as error:
            result.problems.append(error)
            continue
        if upload.stage == "georef":
            result.collections.add(upload.collection)
        elif upload.stage == "scanned":
            result.scans.append(upload)
    return result
