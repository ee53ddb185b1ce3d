"""Deployment settings read from ``LS4_*`` environment variables.

None of these is a secret: credentials live in Airflow connections (for the
pipeline) and in MapServer's own config and PostgreSQL service file (for the
WMS), never in anything ls4 writes to the bucket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# How objects are made public (see access.py, which names them).
PUBLIC_ACCESS_MODES = ("policy", "acl")


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class Settings:
    bucket: str = "ls4"
    public_url: str = "http://127.0.0.1:9000/ls4"
    wms_url: str = "http://127.0.0.1:8081/wms/"
    pg_service: str = "ls4"
    # The DAG factory's local copy of the registry (the registry itself is in PostGIS, see
    # registry.py), refreshed from PostGIS once it is older than registry_max_age_s.
    registry_path: str = "registry.json"
    registry_max_age_s: int = 30
    notify: str = "log"
    s3_conn_id: str = "ls4_s3"
    postgis_conn_id: str = "ls4_postgis"
    mapfile_uid: str = "0"
    mapfile_gid: str = "0"
    # SQS queue (URL) the bucket sends its upload events to; empty: the bucket
    # sends none, and discovery polls the bucket instead (README, Events).
    upload_queue: str = ""
    # SQS queue (URL) the bucket sends ``mapfiles/`` events to, for the mapfile
    # sync on the MapServer host; empty: the sync lists ``mapfiles/`` every 2 s.
    mapfile_queue: str = ""
    # Hour (UTC) of the daily reconciliation: discovery at HH:00, each
    # collection's run at a minute of that hour of its own.
    reconcile_hour: int = 3
    # SNS topic every notification is published to, besides ``notify``; empty: none.
    sns_topic_arn: str = ""
    # How public objects are made public (access.py): "policy" (the bucket
    # policy's statement; no ACLs) or "acl" (public-read on each object).
    public_access: str = "policy"
    # Whether discovery writes the policy's public-read statement when it is
    # missing (it needs s3:PutBucketPolicy); otherwise it only reports it.
    apply_bucket_policy: bool = False
    # The first retry of a failed collection task waits this long (later ones back off
    # exponentially): an S3 or PostGIS outage of a few minutes is ridden out.
    retry_delay_s: int = 30
    # Uploads larger than these are refused with their reason before any raster
    # work: a header claiming 100000 x 100000 pixels in a file of 300 KB would
    # otherwise hold a worker for minutes. A 20000 x 20000 frame is 400 Mpx.
    max_pixels: int = 3_000_000_000
    max_upload_bytes: int = 20 * 2**30
    # Scaling out (README, Deploying at scale). The Celery queue of the raster work (a frame's
    # compress, overviews and COG; the collection overview): the workers that serve it
    # (`airflow celery worker --queues raster`) give it its own concurrency. The
    # LocalExecutor of `make run` ignores queues.
    raster_queue: str = "raster"
    # Airflow pools that cap, across all workers, the tasks moving frames through S3 and
    # those writing or querying PostGIS hard; stack.sh creates them with these sizes.
    s3_pool: str = "ls4_s3"
    s3_pool_slots: int = 8
    postgis_pool: str = "ls4_postgis"
    postgis_pool_slots: int = 4
    # Daily maintenance removes orphan mapfiles and tables for good instead of
    # quarantining them (LS4_MAINTENANCE_DELETE=true). Uploads are never removed.
    maintenance_delete: bool = False

    @classmethod
    def from_env(cls, environ=os.environ) -> "Settings":
        bucket = environ.get("LS4_BUCKET", cls.bucket)
        endpoint = environ.get("LS4_S3_ENDPOINT", "").rstrip("/")
        default_public = f"{endpoint}/{bucket}" if endpoint else f"https://{bucket}.s3.amazonaws.com"
        return cls(
            bucket=bucket,
            public_url=environ.get("LS4_PUBLIC_URL", default_public).rstrip("/"),
            wms_url=environ.get("LS4_WMS_URL", cls.wms_url),
            pg_service=environ.get("LS4_PG_SERVICE", cls.pg_service),
            registry_path=environ.get("LS4_REGISTRY", cls.registry_path),
            registry_max_age_s=int(environ.get("LS4_REGISTRY_MAX_AGE_S", cls.registry_max_age_s)),
            notify=environ.get("LS4_NOTIFY", cls.notify),
            s3_conn_id=environ.get("LS4_S3_CONN_ID", cls.s3_conn_id),
            postgis_conn_id=environ.get("LS4_POSTGIS_CONN_ID", cls.postgis_conn_id),
            mapfile_uid=environ.get("LS4_MAPFILE_UID", cls.mapfile_uid),
            mapfile_gid=environ.get("LS4_MAPFILE_GID", cls.mapfile_gid),
            upload_queue=environ.get("LS4_UPLOAD_QUEUE", cls.upload_queue),
            mapfile_queue=environ.get("LS4_MAPFILE_QUEUE", cls.mapfile_queue),
            reconcile_hour=int(environ.get("LS4_RECONCILE_HOUR", cls.reconcile_hour)),
            sns_topic_arn=environ.get("LS4_SNS_TOPIC_ARN", cls.sns_topic_arn),
            public_access=_choice("LS4_PUBLIC_ACCESS", environ.get("LS4_PUBLIC_ACCESS", cls.public_access),
                                  PUBLIC_ACCESS_MODES),
            apply_bucket_policy=_flag(environ.get("LS4_APPLY_BUCKET_POLICY", "")),
            maintenance_delete=_flag(environ.get("LS4_MAINTENANCE_DELETE", "")),
            raster_queue=environ.get("LS4_RASTER_QUEUE", cls.raster_queue),
            s3_pool_slots=int(environ.get("LS4_S3_POOL_SLOTS", cls.s3_pool_slots)),
            postgis_pool_slots=int(environ.get("LS4_POSTGIS_POOL_SLOTS", cls.postgis_pool_slots)),
            retry_delay_s=int(environ.get("LS4_RETRY_DELAY_S", cls.retry_delay_s)),
            max_pixels=int(environ.get("LS4_MAX_PIXELS", cls.max_pixels)),
            max_upload_bytes=int(environ.get("LS4_MAX_UPLOAD_BYTES", cls.max_upload_bytes)),
        )

    @property
    def pools(self) -> dict[str, tuple[int, str]]:
        """The Airflow pools ls4's tasks use: name -> (slots, what its tasks use)."""
        return {self.s3_pool: (self.s3_pool_slots, "S3 heavily (moving frames)"),
                self.postgis_pool: (self.postgis_pool_slots, "PostGIS heavily (writing the tile index)")}

    @property
    def uses_acls(self) -> bool:
        """Whether public objects are made public one by one, with the public-read ACL."""
        return self.public_access == "acl"

    def public_link(self, key: str) -> str:
        return f"{self.public_url}/{key}"


# PostGIS as the local stack and the ``ls4`` command describe it (the pipeline itself
# reaches it through its Airflow connection, MapServer through its service file).
POSTGIS_VARIABLES = ("LS4_PG_HOST", "LS4_PG_PORT", "LS4_PG_DB", "LS4_PG_USER", "LS4_PG_PASSWORD")


def postgis_url(environ=os.environ):
    """The SQLAlchemy URL of ``LS4_PG_*`` (any character of the password is safe in it);
    KeyError names a variable that is not set."""
    from sqlalchemy.engine import URL

    missing = [name for name in POSTGIS_VARIABLES if not environ.get(name)]
    if missing:
        raise KeyError(", ".join(missing))
    return URL.create("postgresql+psycopg2", username=environ["LS4_PG_USER"], password=environ["LS4_PG_PASSWORD"],
                      host=environ["LS4_PG_HOST"], port=int(environ["LS4_PG_PORT"]), database=environ["LS4_PG_DB"])
