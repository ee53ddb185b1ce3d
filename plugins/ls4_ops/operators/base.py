"""What every ls4 operator shares: the bucket, the hooks, the settings.

DAG files import these operators, and the factory builds seven of them per
collection, so two things are kept out of the parse path:

* provider hooks are imported where they are used (PostgresHook pulls in
  psycopg and the SQL provider, S3Hook boto3);
* Airflow wraps every ``__init__`` of an operator class hierarchy (each level
  merges defaults and copies the DAG params again: about 13 µs a task), so the
  base classes have no ``__init__``: a collection operator's own ``__init__``
  hands its shared arguments to :meth:`CollectionOperator.take_collection`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, get_current_context

from ls4_ops.layout import Collection, LayoutError, collection_of, parse_key
from ls4_ops.notify import Notification
from ls4_ops.operators.notifications import ledger_engine, send
from ls4_ops.plan import Notice, S3Object
from ls4_ops.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ls4_ops.hooks import Ls4S3Hook


class Ls4Operator(BaseOperator):
    """An operator on the ls4 bucket.

    Subclasses take ``bucket_name`` and ``aws_conn_id`` in their ``__init__``
    and hand them to :meth:`use_bucket`. DAG factories pass both, so that no
    operator reads the environment at parse time.
    """

    bucket_name: str
    aws_conn_id: str
    postgis_conn_id: str = ""
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
        from ls4_ops.hooks import Ls4S3Hook

        return Ls4S3Hook(aws_conn_id=self.aws_conn_id)

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    @cached_property
    def postgis(self) -> Engine:
        """The tile-index database, through the postgres provider's hook."""
        from ls4_ops.hooks import postgis_engine

        return postgis_engine(self.postgis_conn_id or self.settings.postgis_conn_id)

    @property
    def public_acl(self) -> str | None:
        """The ACL of what ls4 publishes: none where the bucket policy makes it public."""
        return "public-read" if self.settings.uses_acls else None

    def make_public(self, keys: Iterable[str]) -> None:
        """Make uploads public where that takes an ACL on each; the bucket policy covers them
        otherwise (see access.py)."""
        if self.settings.uses_acls:
            for key in keys:
                self.s3.set_public_read(self.bucket_name, key)

    def notify(self, notices: Iterable[Notice]) -> None:
        """Tell operators and uploaders about ``notices`` (those not told before), with a link
        to this task's run in Airflow."""
        notices = list(notices)
        if not notices:
            return
        ti = get_current_context()["ti"]
        send([Notification(subject=notice.subject, reason=notice.reason, key=notice.key, etag=notice.etag,
                           collection=notice.collection or self.collection_name or collection_of(notice.key),
                           source=f"{self.dag_id}.{self.task_id}", run_id=ti.run_id, run_url=ti.log_url)
              for notice in notices],
             settings=self.settings, aws_conn_id=self.aws_conn_id,
             # A database that cannot be reached must not keep the notices from going out.
             postgis=ledger_engine(self.postgis_conn_id or self.settings.postgis_conn_id))


class CollectionOperator(Ls4Operator):
    """An operator on one collection.

    A subclass's ``__init__`` passes the arguments it does not take itself
    through :meth:`take_collection` to ``BaseOperator``.

    :param collection: the collection (the DAG factory parsed it once for all its tasks)
    :param bucket_name: the ls4 bucket
    :param aws_conn_id: Airflow connection of the bucket
    :param postgis_conn_id: Airflow connection of the tile-index database
    """

    def take_collection(self, kwargs: dict) -> dict:
        """Take the arguments above out of ``kwargs``; the others are ``BaseOperator``'s."""
        self.collection: Collection = kwargs.pop("collection")
        self.use_bucket(kwargs.pop("bucket_name", None), kwargs.pop("aws_conn_id", None))
        self.postgis_conn_id = kwargs.pop("postgis_conn_id", None) or ""
        return kwargs

    @property
    def collection_name(self) -> str:
        return self.collection.name

    def cogs(self) -> dict[str, S3Object]:
        """The collection's COGs by key (not the tile-index files beside them)."""
        return {obj.key: obj for obj in self.s3.list_objects(self.bucket_name, self.collection.prefix("cog"))
                if self.collection.is_cog_key(obj.key)}

    def scans(self) -> dict[str, S3Object]:
        """The collection's scanned uploads by key. Other objects under
        ``scanned/`` are left alone (discovery reports them): never made public."""
        scans = {}
        for obj in self.s3.list_objects(self.bucket_name, self.collection.prefix("scanned")):
            try:
                parse_key(obj.key)  # under this prefix, any key that parses is one of its scans
            except LayoutError:
                continue
            scans[obj.key] = obj
        return scans

