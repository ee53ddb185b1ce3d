"""Which uploads of a collection need raster work in this run.

An upload needs work when its COG is missing or was made from another
version of it (the COG carries the source ETag in its metadata). Nothing is
processed twice for nothing; ``force`` and ``keys`` let operators reprocess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ls4_ops.layout import Collection, LayoutError, parse_key

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


@dataclass
class Plan:
    todo: list[dict]
    up_to_date: list[str]
    problems: list[tuple[str, str]]  # (key, what is wrong and what to do)


def plan_uploads(
    collection: Collection,
    georef: Iterable[S3Object],
    processed: Mapping[str, str],
    *,
    force: bool = False,
    only_keys: Sequence[str] | None = None,
) -> Plan:
    """Uploads to process: ``processed`` maps COG key -> source ETag it was made from."""
    wanted = set(only_keys) if only_keys else None
    by_cog: dict[str, S3Object] = {}
    problems: list[tuple[str, str]] = []
    for obj in sorted(georef, key=lambda o: (o.last_modified is None, o.last_modified or 0, o.key)):
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
    if wanted is not None:
        unknown = wanted - {obj.key for obj in by_cog.values()}
        problems.extend((key, f"asked for, but it is not a georef upload of {collection.name}")
                        for key in sorted(unknown))
    todo, up_to_date = [], []
    for cog_key, obj in sorted(by_cog.items()):
        if wanted is not None and obj.key not in wanted:
            continue
        if force or processed.get(cog_key) != obj.etag:
            todo.append({"key": obj.key, "etag": obj.etag, "cog_key": cog_key})
        else:
            up_to_date.append(obj.key)
    return Plan(todo=todo, up_to_date=up_to_date, problems=problems)
