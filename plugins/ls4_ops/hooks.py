"""Airflow hooks for ls4: the provider's S3Hook plus what GDAL needs from it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.exceptions import ClientError

from ls4_ops import access, scratch
from ls4_ops.plan import CogSource, S3Object
from ls4_ops.s3env import S3Endpoint

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# boto3's own threshold for multipart uploads.
SINGLE_PUT_MAX_BYTES = 8 * 2**20


class Ls4S3Hook(S3Hook):
    """S3Hook that also gives the same endpoint and credentials to GDAL."""

    def endpoint(self) -> S3Endpoint:
        credentials = self.get_credentials()
        return S3Endpoint(
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            session_token=credentials.token,
            endpoint_url=self.conn_config.endpoint_url,
            region=self.conn_region_name or "us-east-1",
        )

    def list_objects(self, bucket_name: str, prefix: str) -> list[S3Object]:
        return [S3Object.from_listing(entry)
                for entry in self.get_file_metadata(prefix=prefix, bucket_name=bucket_name)]

    def cog_source(self, bucket_name: str, cog_key: str) -> CogSource | None:
        """The upload version a COG was made from, by its metadata; None when there is no such object."""
        head = self.head_object(key=cog_key, bucket_name=bucket_name)
        return None if head is None else CogSource.from_metadata(head.get("Metadata", {}))

    def metadata(self, bucket_name: str, key: str) -> dict[str, str] | None:
        """An object's user metadata; None when there is no such object."""
        head = self.head_object(key=key, bucket_name=bucket_name)
        return None if head is None else head.get("Metadata", {})

    def upload(self, filename: str, bucket_name: str, key: str, *, metadata: dict | None = None,
               acl: str | None = None, content_type: str | None = None) -> str:
        """Upload a file atomically: readers see the old object or the new one, never part of it.
        Returns the new object's ETag.

        Small files go in one PUT; large ones through boto3's multipart transfer,
        whose object appears only when it completes.
        """
        extra: dict = {}
        if metadata:
            extra["Metadata"] = metadata
        if acl:
            extra["ACL"] = acl
        if content_type:
            extra["ContentType"] = content_type
        client = self.get_conn()
        if os.path.getsize(filename) < SINGLE_PUT_MAX_BYTES:
            # boto3's transfer manager costs ~10 ms of thread hand-offs per file, in vain for these.
            with open(filename, "rb") as body:
                return client.put_object(Bucket=bucket_name, Key=key, Body=body, **extra)["ETag"].strip('"')
        client.upload_file(filename, bucket_name, key, ExtraArgs=extra or None)
        return client.head_object(Bucket=bucket_name, Key=key)["ETag"].strip('"')

    def put_text(self, text: str, bucket_name: str, key: str, *, content_type: str, metadata: dict) -> None:
        """Publish a small text file (a mapfile, a page) in one PUT."""
        self.get_conn().put_object(Bucket=bucket_name, Key=key, Body=text.encode(), ContentType=content_type,
                                   Metadata=metadata)

    def bucket_policy(self, bucket_name: str) -> dict | None:
        """The bucket's policy; None when it has none."""
        return access.bucket_policy(self.get_conn(), bucket_name)

    def put_bucket_policy(self, bucket_name: str, policy: dict) -> None:
        self.get_conn().put_bucket_policy(Bucket=bucket_name, Policy=json.dumps(policy))

    def set_public_read(self, bucket_name: str, key: str) -> bool:
        """Make ``key`` public-read; False when it was deleted since it was listed."""
        try:
            self.get_conn().put_object_acl(Bucket=bucket_name, Key=key, ACL="public-read")
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            self.log.warning("%s was deleted before it could be made public-read", key)
            return False
        return True

    @contextmanager
    def downloaded(self, bucket_name: str, keys: dict[str, str]) -> Iterator[str]:
        """Download ``keys`` (key -> local file name) into a fresh scratch folder."""
        with scratch.workspace("download") as directory:
            client = self.get_conn()
            for key, name in keys.items():
                client.download_file(bucket_name, key, os.path.join(directory, name))
            yield directory


def postgis_engine(conn_id: str) -> Engine:
    """The tile-index database through the postgres provider's hook (imported here: it pulls
    in psycopg and the SQL provider, which no DAG file needs at parse time)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id).get_sqlalchemy_engine()
