"""The knobs of the scaled-out setup: the raster queue, the pools, and the Celery stack's
connections as env.sh builds them."""

from __future__ import annotations

import subprocess

from sqlalchemy.engine import make_url

from include import local_stack
from ls4_ops.settings import Settings


def test_the_raster_queue_and_the_pool_sizes_come_from_the_environment():
    assert Settings.from_env({}).raster_queue == "raster"
    assert Settings.from_env({}).pools == {"ls4_s3": (8, "S3 heavily (moving frames)"),
                                           "ls4_postgis": (4, "PostGIS heavily (writing the tile index)")}
    tuned = Settings.from_env({"LS4_RASTER_QUEUE": "gdal", "LS4_S3_POOL_SLOTS": "64",
                               "LS4_POSTGIS_POOL_SLOTS": "16"})
    assert tuned.raster_queue == "gdal"
    assert {name: slots for name, (slots, _) in tuned.pools.items()} == {"ls4_s3": 64, "ls4_postgis": 16}


def test_the_celery_stack_reaches_its_metadata_database_with_any_user_and_password():
    password, user = "p@ss w/ö%:#?&'\"\\", "ls4 user"
    env = local_stack.environment({"LS4_EXECUTOR": "celery", "LS4_PG_PASSWORD": password, "LS4_PG_USER": user,
                  "LS4_PG_PORT": "15433", "LS4_AIRFLOW_DB": "airflow_x", "LS4_REDIS_PORT": "16379"})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name, scheme in (("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2"),
                         ("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql+psycopg2")):
        url = make_url(env[name].removeprefix("db+"))
        assert env[name].startswith(scheme + "://")
        assert (url.username, url.password, url.port, url.database) == (user, password, 15433, "airflow_x")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:16379/0"


def test_the_local_stack_keeps_airflow_standalone_and_its_own_database():
    env = local_stack.environment({})
    assert env["LS4_EXECUTOR"] == "local"
    assert not {"AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"} & set(env)


def test_the_stack_refuses_an_unknown_executor():
    result = subprocess.run([local_stack.STACK, "status"], env=local_stack.environment({"LS4_EXECUTOR": "kubernetes"}),
                            capture_output=True, text=True)
    assert result.returncode != 0 and "expected local or celery" in result.stderr
