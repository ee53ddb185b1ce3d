"""The run ledger: each raster stage of each upload, as it ran, in PostGIS.

One row per attempt of a stage (``compress``, ``overviews``, ``cog``) of one
version (ETag) of an upload: when, how long, the outcome and why it failed,
the objects it wrote, the software that wrote them and the options it used.
It answers "what happened to key K" (:func:`history`), "which frames failed
this week" (:func:`failed_since`) and "everything made with options X"
(:func:`made_with`: what to reprocess after a profile changes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ls4_ops.tileindex import CATALOG_SCHEMA, create_once

TABLE = f"{CATALOG_SCHEMA}.frame_stages"
STAGES = ("compress", "overviews", "cog")
SUCCESS, BAD_UPLOAD, FAILED = "success", "bad upload", "failed"
COLUMNS = ("key", "etag", "collection", "stage", "run_id", "try_number", "started", "seconds", "outcome",
           "reason", "outputs", "software", "options")
_DDL = ("id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key text NOT NULL, etag text NOT NULL, "
        "collection text NOT NULL, stage text NOT NULL, run_id text NOT NULL, try_number integer NOT NULL, "
        "started timestamptz NOT NULL, seconds double precision NOT NULL, outcome text NOT NULL, "
        "reason text NOT NULL DEFAULT '', outputs jsonb NOT NULL DEFAULT '[]', "
        "software jsonb NOT NULL DEFAULT '{}', options jsonb NOT NULL DEFAULT '{}'")
_JSON_COLUMNS = ("outputs", "software", "options")


@dataclass(frozen=True)
class StageRecord:
    key: str
    etag: str
    collection: str
    stage: str
    run_id: str
    try_number: int
    started: datetime
    seconds: float
    outcome: str
    reason: str = ""
    outputs: list[str] = field(default_factory=list)
    software: Mapping[str, str] = field(default_factory=dict)
    options: Mapping = field(default_factory=dict)


@cache
def software() -> dict[str, str]:
    """The versions that decide what a stage writes."""
    import rasterio
    import rio_cogeo

    from ls4_ops import turbo_gdal

    # The nc COG's JPEG is written by the GDAL bundled in pyogrio's wheel (libjpeg-turbo).
    return {"gdal": rasterio.__gdal_version__, "gdal-jpeg-cog": turbo_gdal.version(),
            "rasterio": rasterio.__version__, "rio-cogeo": rio_cogeo.__version__}


def stage_options(stage: str, band: str) -> dict:
    """What ``stage`` writes with, from the profiles registry: creation options and GDAL settings."""
    from ls4_ops.profiles import PROFILES  # rio-cogeo and rasterio: not for readers of the ledger

    creation = {"compress": PROFILES.intermediate[band], "overviews": PROFILES.intermediate_overviews,
                "cog": PROFILES.cog[band]}[stage]
    return {"creation": dict(creation), "gdal": dict(PROFILES.env[stage])}


def record(connection: Connection, entry: StageRecord) -> None:
    create_once(connection, TABLE, _DDL)
    values = {name: getattr(entry, name) for name in COLUMNS}
    values.update({name: json.dumps(values[name], default=str) for name in _JSON_COLUMNS})
    connection.execute(text(
        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ("
        + ", ".join(f"CAST(:{name} AS jsonb)" if name in _JSON_COLUMNS else f":{name}" for name in COLUMNS) + ")"),
        values)


def _select(connection: Connection, where: str, params: Mapping) -> list[StageRecord]:
    if connection.execute(text("SELECT to_regclass(:table)"), {"table": TABLE}).scalar() is None:
        return []
    rows = connection.execute(text(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE {where} ORDER BY started, id"),
                              params).mappings()
    return [StageRecord(**row) for row in rows]


def history(connection: Connection, key: str) -> list[StageRecord]:
    """Every stage ever run on upload ``key``, oldest first."""
    return _select(connection, "key = :key", {"key": key})


def failed_since(connection: Connection, since: datetime) -> list[StageRecord]:
    """The stages that failed since ``since``, oldest first (bad uploads and other failures)."""
    return _select(connection, "started >= :since AND outcome <> :success", {"since": since, "success": SUCCESS})


def made_with(connection: Connection, stage: str, options: Mapping) -> list[StageRecord]:
    """The successful runs of ``stage`` whose options include ``options`` (a part of
    :func:`stage_options`, e.g. ``{"creation": {"QUALITY": 85}}``), oldest first."""
    return _select(connection, "stage = :stage AND outcome = :success AND options @> CAST(:options AS jsonb)",
                   {"stage": stage, "success": SUCCESS, "options": json.dumps(options)})
