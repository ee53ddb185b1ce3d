"""The Airflow assets ls4's DAGs are scheduled on: one per collection (its
uploads changed), and the tile indexes (one of them changed).

Upload events reach a collection's asset through the ``ls4_collection_uploads``
alias: the router (or discovery, when the bucket sends no events) names the
collection's asset when it adds an event, so no DAG has to list every
collection as an outlet.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

from ls4_ops.layout import Collection

COLLECTION_UPLOADS = AssetAlias("ls4_collection_uploads")
# A change to any collection's tile index; the compiled index is scheduled on it.
TILE_INDEXES = Asset("ls4_tile_indexes")
# What the upload queue's watcher reports (its events carry the changed keys).
UPLOAD_EVENTS = "ls4_upload_events"


def collection_asset(collection: Collection, bucket: str) -> Asset:
    """The uploads of ``collection``: its DAG runs when an event names this asset.

    Not an ``s3://`` URI: Airflow would normalize it with the amazon provider's
    handler, and finding that handler loads every provider's asset module (and
    boto3): half a second of every DAG-folder parse. An ``x-`` scheme is left as it is.
    """
    return Asset(name=collection.dag_id, uri=f"x-ls4://{bucket}/{collection.root}")
