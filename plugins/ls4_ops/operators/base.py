"""What every ls4 operator shares: the bucket, the hooks, the settings."""

from __future__ import annotations

from functools import cached_property

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import BaseOperator

from ls4_ops.hooks import Ls4S3Hook
from ls4_ops.layout import Collection
from ls4_ops.settings import Settings


class Ls4Operator(BaseOperator):
    def __init__(self, *, bucket_name: str | None = None, aws_conn_id: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if not (bucket_name and aws_conn_id):  # DAG factories pass both: parse time stays low
            settings = Settings.from_env()
            bucket_name = bucket_name or settings.bucket
            aws_conn_id = aws_conn_id or settings.s3_conn_id
        self.bucket_name = bucket_name
        self.aws_conn_id = aws_conn_id

    collection_name = ""

    @cached_property
    def s3(self) -> Ls4S3Hook:
        return Ls4S3Hook(aws_conn_id=self.aws_conn_id)

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    def postgres(self) -> PostgresHook:
        return PostgresHook(postgres_conn_id=self.settings.postgis_conn_id)


class CollectionOperator(Ls4Operator):
    """An operator on one collection; ``collection`` is ``Collection.to_dict()`` (JSON-able)."""

    def __init__(self, *, collection: dict, **kwargs):
        super().__init__(**kwargs)
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
