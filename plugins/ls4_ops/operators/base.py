"""What every ls4 operator shares: the bucket, the hooks, the settings.

DAG files import these operators, and the factory builds seven of them per
collection, so two things are kept out of the parse path:

* provider hooks that no DAG file needs are imported where they are used
  (PostgresHook pulls in psycopg and the SQL provider);
* Airflow wraps every ``__init__`` of an operator class hierarchy (each level
  merges defaults and copies the DAG params again), so the shared arguments
  are taken in one ``__init__`` per base class, not in a chain of them.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator

from ls4_ops.hooks import Ls4S3Hook
from ls4_ops.layout import Collection, LayoutError, parse_key
from ls4_ops.plan import S3Object
from ls4_ops.settings import Settings

if TYPE_CHECKING:
    from airflow.providers.postgres.hooks.postgres import PostgresHook


class Ls4Operator(BaseOperator):
    """An operator on the ls4 bucket.

    Subclasses take ``bucket_name`` and ``aws_conn_id`` in their ``__init__``
    and hand them to :meth:`use_bucket`. DAG factories pass both, so that no
    operator reads the environment at parse time.
    """

    bucket_name: str
    aws_conn_id: str
    collection_name = ""

    def use_bucket(self, bucket_name: str | None, aws_conn_id: str | None) -> None:
        if not (bucket_name and aws_conn_id):
            settings = Settings.from_env()
            bucket_name = bucket_name or settings.bucket
            aws_conn_id = aws_conn_id or settings.s3_conn_id
        self.bucket_name = bucket_name
        self.aws_conn_id = aws_conn_id

    @cached_property
    def s3(self) -> Ls4S3Hook:
        return Ls4S3Hook(aws_conn_id=self.aws_conn_id)

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    def postgres(self) -> PostgresHook:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=self.settings.postgis_conn_id)


class CollectionOperator(Ls4Operator):
    """An operator on one collection; ``collection`` is ``Collection.to_dict()`` (JSON-able)."""

    def __init__(self, *, collection: dict, bucket_name: str | None = None, aws_conn_id: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.use_bucket(bucket_name, aws_conn_id)
        self.collection = collection

    @cached_property
    def coll(self) -> Collection:
        return Collection.from_dict(self.collection)

    @property
    def collection_name(self) -> str:
        return self.coll.name

    def cog_keys(self) -> list[str]:
        """The collection's COGs (not the tile-index files beside them)."""
        return [obj.key for obj in self.s3.list_objects(self.bucket_name, self.coll.prefix("cog"))
                if self.coll.is_cog_key(obj.key)]

    def scans(self) -> dict[str, S3Object]:
        """The collection's scanned uploads by key. Other objects under
        ``scanned/`` are left alone (discovery reports them): never made public."""
        scans = {}
        for obj in self.s3.list_objects(self.bucket_name, self.coll.prefix("scanned")):
            try:
                parse_key(obj.key)  # under this prefix, any key that parses is one of its scans
            except LayoutError:
                continue
            scans[obj.key] = obj
        return scans
