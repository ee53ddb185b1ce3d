"""Test session set-up.

The test stack is the project's own local stack (``include/stack/``) on its
own ports and state folder, so a ``make run`` stack keeps running beside it.
Its environment is set here, before anything imports Airflow (which reads
its configuration at import).
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (os.path.join(ROOT, "plugins"), ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

from include import local_stack  # noqa: E402

STACK = local_stack.STACK
SERVICES = ["s3", "postgis", "mapserver", "mapsync"]
TEST_STACK = {
    "LS4_STATE_DIR": os.path.join(ROOT, ".state", "test"),
    "LS4_S3_ENDPOINT": "http://127.0.0.1:19000",
    "LS4_PG_PORT": "15433",
    "LS4_WMS_PORT": "18081",
    "LS4_AIRFLOW_PORT": "18080",
}
local_stack.use(TEST_STACK)


@pytest.fixture(scope="session")
def services():
    """The real local services (S3, PostGIS, MapServer + mapfile sync), started for the session."""
    local_stack.start(SERVICES)
    _start_clean()
    yield os.environ
    local_stack.stop(SERVICES)


def _start_clean() -> None:
    """Each session starts from an empty bucket, index, registry and notification log."""
    from sqlalchemy import text

    from ls4_ops.s3env import S3Endpoint
    from ls4_ops.tileindex import CATALOG, CATALOG_SCHEMA

    client = S3Endpoint.from_env().boto3_client()
    bucket = os.environ["LS4_BUCKET"]
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    with local_stack.postgis_engine().begin() as connection:
        if connection.execute(text("SELECT to_regclass(:catalog)"), {"catalog": CATALOG}).scalar():
            for table in connection.execute(text(f"SELECT table_name FROM {CATALOG}")).scalars():
                connection.execute(text(f'DROP TABLE IF EXISTS public."{table}"'))
        connection.execute(text(f"DROP SCHEMA IF EXISTS {CATALOG_SCHEMA} CASCADE"))
    for path in (os.environ["LS4_NOTIFY"].removeprefix("file:"), os.environ["LS4_REGISTRY"]):
        if os.path.exists(path):
            os.remove(path)


@pytest.fixture(scope="session")
def airflow_db(services):
    """A fresh Airflow metadata database (SQLite) for ``dag.test()``: no history from earlier sessions."""
    database = os.path.join(os.environ["AIRFLOW_HOME"], "airflow.db")
    # With its write-ahead log: a session killed mid-write leaves one behind.
    for path in (database, database + "-wal", database + "-shm"):
        if os.path.exists(path):
            os.remove(path)
    subprocess.run([os.path.join(os.environ["LS4_VENV"], "bin", "airflow"), "db", "migrate"],
                   check=True, capture_output=True)
    return os.environ["AIRFLOW_HOME"]
