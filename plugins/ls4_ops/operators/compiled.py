"""The compiled index: every collection's footprints in one public GeoJSON file."""

from __future__ import annotations

import os

from airflow.sdk.exceptions import AirflowSkipException

from ls4_ops import compiled_index, scratch
from ls4_ops.layout import COMPILED_INDEX_KEY
from ls4_ops.operators.base import Ls4Operator


class CompileIndexOperator(Ls4Operator):
    """Write ``geojson/compiled_historical_indexes.geojson`` from the tile-index tables.

    The file is rewritten only when a table changed since it was written (its
    S3 metadata holds the fingerprint of the tables it shows); otherwise the
    task is skipped after one query and one HEAD. It is uploaded public-read
    in one PUT (or multipart completion), so readers get the old file or the
    new one, never part of either.

    :param bucket_name: the ls4 bucket
    :param aws_conn_id: Airflow connection of the bucket
    :param postgis_conn_id: Airflow connection of the tile-index database
    """

    template_fields = ("bucket_name", "aws_conn_id", "postgis_conn_id")

    def __init__(self, *, bucket_name: str | None = None, aws_conn_id: str | None = None,
                 postgis_conn_id: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.use_bucket(bucket_name, aws_conn_id)
        self.postgis_conn_id = postgis_conn_id or ""

    def execute(self, context):
        head = self.s3.head_object(key=COMPILED_INDEX_KEY, bucket_name=self.bucket_name)
        published = (head or {}).get("Metadata", {}).get(compiled_index.FINGERPRINT_METADATA)
        with scratch.workspace("compiled") as directory:
            path = os.path.join(directory, os.path.basename(COMPILED_INDEX_KEY))
            # One snapshot: the fingerprint stored is of exactly the rows written.
            with self.postgis.execution_options(isolation_level="REPEATABLE READ").begin() as connection:
                fingerprint = compiled_index.fingerprint(connection)
                if fingerprint == published:
                    raise AirflowSkipException(f"nothing changed since {COMPILED_INDEX_KEY} was written "
                                               f"({head['LastModified']})")
                features = compiled_index.write_geojson(connection, path)
            self.s3.upload(path, self.bucket_name, COMPILED_INDEX_KEY, acl=self.public_acl,
                           content_type="application/geo+json",
                           metadata={compiled_index.FINGERPRINT_METADATA: fingerprint})
        self.log.info("%s: %d features, fingerprint %s", COMPILED_INDEX_KEY, features, fingerprint)
        return {"features": features, "fingerprint": fingerprint}
