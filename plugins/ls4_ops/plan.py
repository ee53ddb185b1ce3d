"""Which uploads of a collection need raster work in this run.

An upload needs work when its COG is missing or was made from another
version of it (the COG carries the source ETag in its metadata). Nothing is
processed twice for nothing. A manual run reprocesses what an operator names
(``keys``) or the whole collection (``force``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ls4_ops.layout import Collection, LayoutError, is_folder_marker, parse_key

SOURCE_ETAG_METADATA = "ls4-source-etag"
SOURCE_KEY_METADATA = "ls4-source-key"


@dataclass(frozen=True)
class S3Object:
    key: str
    etag: str
    size: int
    last_modified: datetime | None = None

    @classmethod
    def from_listing(cls, entry: Mapping) -> "S3Object":
        return cls(entry["Key"], entry["ETag"].strip('"'), entry["Size"], entry.get("LastModified"))


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
    url_prefix = f"s3://{bucket}/"
    georef = collection.prefix("georef")
    normalised = []
    for key in keys:
        key = key.removeprefix(url_prefix)
        normalised.append(key if "/" in key else georef + key)
    return RunRequest(tuple(dict.fromkeys(normalised)), force)


@dataclass
class Plan:
    todo: list[dict]
    up_to_date: list[str]
    problems: list[tuple[str, str]]  # (key, what is wrong and what to do)
    # Keys a manual run asked for that cannot be processed, and why.
    not_found: list[tuple[str, str]] = field(default_factory=list)


def plan_uploads(
    collection: Collection,
    georef: Iterable[S3Object],
    processed: Mapping[str, str],
    request: RunRequest = RunRequest(),
) -> Plan:
    """Uploads to process: ``processed`` maps COG key -> source ETag it was made from.

    Named keys are reprocessed even when their COG is up to date: naming
    them is how an operator asks for it.
    """
    by_cog: dict[str, S3Object] = {}
    problems: list[tuple[str, str]] = []
    for obj in sorted(georef, key=lambda o: (o.last_modified is None, o.last_modified or 0, o.key)):
        if is_folder_marker(obj.key):
            continue
        try:
            upload = parse_key(obj.key)
        except LayoutError as error:
            problems.append((obj.key, str(error)))
            continue
        if upload.collection != collection or upload.stage != "georef":
            problems.append((obj.key, f"not a georef upload of {collection.name}"))
            continue
        if obj.size == 0:
            problems.append((obj.key, "the file is empty (0 bytes): upload it again"))
            continue
        if upload.cog_key in by_cog:
            older = by_cog[upload.cog_key].key
            problems.append((older, f"{older} and {obj.key} both make {upload.cog_key}; the newer "
                                    f"upload {obj.key} is used: rename or remove {older}"))
        by_cog[upload.cog_key] = obj
    wanted = set(request.keys)
    usable = {obj.key for obj in by_cog.values()}
    reasons = dict(problems)
    not_found = [(key, reasons.get(key, f"there is no such georef upload of {collection.name}"))
                 for key in request.keys if key not in usable]
    todo, up_to_date = [], []
    for cog_key, obj in sorted(by_cog.items()):
        if wanted and obj.key not in wanted:
            continue
        if wanted or request.force or processed.get(cog_key) != obj.etag:
            todo.append({"key": obj.key, "etag": obj.etag, "cog_key": cog_key})
        else:
            up_to_date.append(obj.key)
    return Plan(todo=todo, up_to_date=up_to_date, problems=problems, not_found=not_found)
