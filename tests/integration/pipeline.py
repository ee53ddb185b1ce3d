"""Driving the real pipeline from tests: S3 uploads, DAG runs, results."""

from __future__ import annotations

import importlib.util
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from ls4_ops import registry
from ls4_ops.layout import Collection
from ls4_ops.operators.collection_dags import dag_file_module
from ls4_ops.s3env import S3Endpoint
from ls4_ops.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def s3():
    return S3Endpoint.from_env().boto3_client()


def sqs():
    return S3Endpoint.from_env().boto3_client("sqs")


def bucket() -> str:
    return os.environ["LS4_BUCKET"]


def upload(path: str, key: str) -> None:
    s3().upload_file(path, bucket(), key)


def readable_by_anyone(key: str) -> bool:
    """Whether anonymous requests for ``key``'s public link succeed: a HEAD (how GDAL's
    /vsicurl/ starts) and a GET (a browser's download)."""
    url = Settings.from_env().public_link(urllib.parse.quote(key))
    try:
        for method in ("HEAD", "GET"):
            with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as answer:
                assert answer.status == 200, (method, url, answer.status)
    except urllib.error.HTTPError as error:
        if error.code == 403:
            return False
        raise
    return True


def has_public_read_acl(key: str) -> bool:
    grants = s3().get_object_acl(Bucket=bucket(), Key=key)["Grants"]
    return any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)


@contextmanager
def acls_enabled():
    """The bucket as AWS made them before April 2023 (ACLs on, no policy), ls4 making objects
    public one by one (``LS4_PUBLIC_ACCESS=acl``); then back to ACLs disabled and the policy."""
    client, before = s3(), os.environ.get("LS4_PUBLIC_ACCESS")
    policy = client.get_bucket_policy(Bucket=bucket())["Policy"]
    client.delete_bucket_ownership_controls(Bucket=bucket())
    client.delete_bucket_policy(Bucket=bucket())
    os.environ["LS4_PUBLIC_ACCESS"] = "acl"
    try:
        yield
    finally:
        os.environ["LS4_PUBLIC_ACCESS"] = before or "policy"
        client.put_bucket_policy(Bucket=bucket(), Policy=policy)
        client.put_bucket_ownership_controls(Bucket=bucket(), OwnershipControls={
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})


def last_modified(keys) -> dict:
    client = s3()
    return {key: client.head_object(Bucket=bucket(), Key=key)["LastModified"] for key in keys}


def load_dags(module: str):
    """Import a DAG file the way the DAG processor does (fresh, from the DAG folder)."""
    path = os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], f"{module}.py")
    spec = importlib.util.spec_from_file_location(f"{module}_{time.monotonic_ns()}", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def discover() -> dict[str, Collection]:
    """Run the discovery DAG; return the registry it leaves."""
    run = load_dags("ls4_discovery").dag.test()
    assert run.state == "success", run
    return registry.load(os.environ["LS4_REGISTRY"])


def run_dag(dag_id: str, **conf):
    """Run a collection's DAG, loaded from the DAG file of its shard."""
    dag = getattr(load_dags(dag_file_module(dag_id)), dag_id)
    return dag.test(run_conf=conf or None)


def returned(run, task_id: str):
    """What a task of a ``dag.test()`` run returned (its XCom)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id, XComModel.task_id == task_id,
            XComModel.key == "return_value"))
    if isinstance(value, str):  # a dict may come back as its JSON text, a string as itself
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


UTM = "EPSG:26914"


def row_bounds(origin: tuple[float, float], size: tuple[int, int], i: int) -> tuple[float, float, float, float]:
    """Frame ``i`` of a row of frames side by side in UTM 14N (1 m pixels), from ``origin``."""
    x0 = origin[0] + i * size[0]
    return (x0, origin[1], x0 + size[0], origin[1] + size[1])


def upload_row(folder, keys: list[str], origin: tuple[float, float], size: tuple[int, int],
               collar: int = 10) -> dict[str, str]:
    """Make a row of collared nc frames in UTM 14N and upload them under ``keys``; key -> local file."""
    from include.synthetic import make_frame

    made = {}
    for i, key in enumerate(keys):
        path = str(folder / f"frame{i}.tif")
        make_frame(path, "nc", *size, crs=UTM, bounds=row_bounds(origin, size, i), collar=collar)
        upload(path, key)
        made[key] = path
    return made


def indexed_cog_keys(collection: Collection) -> list[str]:
    """The COG key of every row of ``collection``'s tile index, repeats kept, sorted."""
    from sqlalchemy import text

    from include import local_stack
    from ls4_ops import tileindex

    with local_stack.postgis_engine().connect() as connection:
        return sorted(connection.execute(text(
            f'SELECT {tileindex.COG_KEY_COLUMN} FROM public."{collection.table}"')).scalars())


def process(collection: Collection):
    """Discover the collection and run its DAG; the run must succeed."""
    assert collection.name in discover()
    run = run_dag(collection.dag_id)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run


def wait_until(what: str, check, timeout: float, interval: float = 3) -> None:
    """Until ``check()`` is true; an AssertionError naming ``what`` after ``timeout`` seconds."""
    try:
        for attempt in Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval),
                                retry=retry_if_result(lambda done: not done)):
            with attempt:
                done = check()
            if not attempt.retry_state.outcome.failed:
                attempt.retry_state.set_result(done)
    except RetryError:
        raise AssertionError(f"no {what} within {timeout} s") from None


def wait_for_mapfile(collection: Collection, timeout: float = 30) -> str:
    path = os.path.join(os.environ["LS4_MAPFILE_DIR"], f"{collection.name}.map")
    wait_until(f"{path} on the MapServer host", lambda: os.path.exists(path), timeout, interval=0.5)
    return path


def notifications() -> list[dict]:
    setting = os.environ["LS4_NOTIFY"]
    path = setting[len("file:"):]
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle]
