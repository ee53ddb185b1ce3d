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

STACK = os.path.join(ROOT, "include", "stack", "stack.sh")
SERVICES = ["s3", "postgis", "mapserver", "mapsync"]
TEST_STACK = {
    "LS4_STATE_DIR": os.path.join(ROOT, ".state", "test"),
    "LS4_S3_ENDPOINT": "http://127.0.0.1:19000",
    "LS4_PG_PORT": "15433",
    "LS4_WMS_PORT": "18081",
    "LS4_AIRFLOW_PORT": "18080",
}


def _stack_environment() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("LS4_", "AIRFLOW", "GDAL_", "AWS_"))}
    clean.update(TEST_STACK)
    output = subprocess.run(
        ["bash", "-c", f'. "{ROOT}/include/stack/env.sh" && env -0'],
        env=clean, check=True, capture_output=True,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in output.split("\0") if "=" in item)


for name in [k for k in os.environ if k.startswith(("LS4_", "AIRFLOW", "AWS_"))]:
    del os.environ[name]
os.environ.update(_stack_environment())


@pytest.fixture(scope="session")
def services():
    """The real local services (S3, PostGIS, MapServer + mapfile sync), started for the session."""
    subprocess.run([STACK, "start", *SERVICES], check=True)
    _start_clean()
    yield os.environ
    subprocess.run([STACK, "stop", *SERVICES], check=False)


def _start_clean() -> None:
    """Each session starts from an empty bucket, registry and notification log."""
    from ls4_ops.s3env import S3Endpoint

    client = S3Endpoint.from_env().boto3_client()
    bucket = os.environ["LS4_BUCKET"]
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    for path in (os.environ["LS4_NOTIFY"].removeprefix("file:"), os.environ["LS4_REGISTRY"]):
        if os.path.exists(path):
            os.remove(path)


@pytest.fixture(scope="session")
def airflow_db(services):
    """A fresh Airflow metadata database (SQLite) for ``dag.test()``: no history from earlier sessions."""
    database = os.path.join(os.environ["AIRFLOW_HOME"], "airflow.db")
    if os.path.exists(database):
        os.remove(database)
    subprocess.run([os.path.join(os.environ["LS4_VENV"], "bin", "airflow"), "db", "migrate"],
                   check=True, capture_output=True)
    return os.environ["AIRFLOW_HOME"]
