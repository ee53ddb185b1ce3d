"""The first task of a collection's run: wait until the collection has a georef upload."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

from ls4_ops.layout import Collection
from ls4_ops.operators.base import Ls4Operator

if TYPE_CHECKING:
    from airflow.sdk import Context


class GeorefUploadSensor(Ls4Operator, BaseSensorOperator):
    """Waits until the collection has an object under its ``georef/`` prefix.

    What the amazon provider's ``S3KeySensor`` does with ``bucket_key="<georef
    prefix>*"`` and ``wildcard_match=True``, deferred to the same
    ``S3KeyTrigger``; but a DAG file that imports ``S3KeySensor`` imports
    boto3 (its module imports ``S3Hook``), a third of what Airflow itself
    needs to parse 500 collection DAGs. Here the hook and the trigger are
    imported when the task runs.

    :param collection: the collection whose uploads it waits for
    :param bucket_name: the ls4 bucket
    :param aws_conn_id: Airflow connection of the bucket
    :param deferrable: wait in the triggerer, not in a worker slot
    """

    def __init__(self, *, collection: Collection, bucket_name: str, aws_conn_id: str, deferrable: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.use_bucket(bucket_name, aws_conn_id)
        self.prefix = collection.prefix("georef")
        self.deferrable = deferrable

    def poke(self, context: Context) -> bool:
        return bool(self.s3.list_keys(bucket_name=self.bucket_name, prefix=self.prefix, max_items=1))

    def execute(self, context: Context) -> None:
        if not self.deferrable:
            super().execute(context)
        elif not self.poke(context):
            from airflow.providers.amazon.aws.triggers.s3 import S3KeyTrigger

            self.defer(timeout=timedelta(seconds=self.timeout), method_name="execute_complete",
                       trigger=S3KeyTrigger(bucket_name=self.bucket_name, bucket_key=f"{self.prefix}*",
                                            wildcard_match=True, aws_conn_id=self.aws_conn_id,
                                            poke_interval=self.poke_interval))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        """The trigger found an upload (or failed: then so does the task)."""
        if event["status"] == "error":
            raise AirflowException(event["message"])
