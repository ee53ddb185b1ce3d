"""The registry of known collections, read by the DAG factory at parse time.

A small JSON file: reading it makes no network call (Airflow's top-level
code rule), and it is rewritten atomically so a parser never sees half of it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable

from ls4_ops.layout import Collection, LayoutError, UploadKey, parse_key, try_parse_key


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


def collections_in(keys: Iterable[str]) -> tuple[set[Collection], list[LayoutError]]:
    """Collections that have georef uploads among ``keys``, and the keys that do not fit."""
    found: set[Collection] = set()
    problems: list[LayoutError] = []
    for key in keys:
        try:
            upload = parse_key(key)
        except LayoutError as error:
            problems.append(error)
            continue
        if upload.stage == "georef":
            found.add(upload.collection)
    return found, problems


def scans_without_georef(keys: Iterable[str], with_georef: set[Collection]) -> list[str]:
    """Scanned uploads among ``keys`` whose collection is not in ``with_georef``.

    A collection's DAG makes its scans public-read when it plans a run, and it
    only plans once a georef upload exists; these scans are left to discovery.
    Keys that do not fit the layout are not scans (``collections_in`` reports them).
    """
    scans = []
    for key in keys:
        upload = try_parse_key(key)
        if isinstance(upload, UploadKey) and upload.stage == "scanned" and upload.collection not in with_georef:
            scans.append(key)
    return scans
