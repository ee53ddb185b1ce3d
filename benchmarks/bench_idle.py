"""What an idle archive costs, and how long an upload then waits for its COG.

On a stack of its own (S3 emulator with its SQS queues and the bucket's
notification, PostGIS, MapServer, the mapfile sync and ``airflow standalone``;
state in ``.state/bench-idle``, wiped at the start):

1. ``--collections`` collections (200) of ``--frames`` small frames each are
   uploaded, registered and processed (each collection's DAG once, in
   process with ``dag.test()``, before Airflow starts), so they are idle
   collections with their COGs, indexes and mapfiles;
2. Airflow starts; every collection's DAG runs once when it appears (the
   daily reconciliation it missed finds nothing to do); the bench waits
   until every DAG is idle;
3. the archive idles for ``--minutes`` (20); counted over that window: the
   DAG runs started, the task instances executed, and every request the
   S3/SQS emulator answered, from any part of ls4 (the triggerer's watcher
   and the mapfile sync included);
4. a 2000 x 2000 px frame is uploaded into one idle collection, and the time
   until its COG exists is taken.

The daily reconciliation (03:00-03:59 UTC) is outside the window unless the
bench runs then; the bench says so when it is not. Ends with
``idle: collections=<n> minutes=<m> runs=<r> tasks=<t> requests=<q> upload_to_cog_s=<s>``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "plugins"), ROOT]

from include import local_stack  # noqa: E402

BENCH_STACK = local_stack.bench_stack("bench-idle", 21100)
SERVICES = ["s3", "postgis", "mapserver", "mapsync"]
local_stack.use(BENCH_STACK)

from sqlalchemy import func, select  # noqa: E402

from include.synthetic import make_frame  # noqa: E402
from ls4_ops import registry  # noqa: E402
from ls4_ops.layout import Collection  # noqa: E402
from ls4_ops.s3env import S3Endpoint  # noqa: E402
from ls4_ops.settings import Settings  # noqa: E402

UTM = "EPSG:26914"
FRAME_PX = (128, 96)  # the idle collections' frames: small, their size does not matter here
UPLOAD_PX = 2000  # the frame whose wait is timed (the 2000 x 2000)
# werkzeug's access log: one line per request the emulator answered.
REQUEST = re.compile(rb'"(GET|PUT|POST|HEAD|DELETE) ')
IDLE_TIMEOUT_S = 3600


def collections(count: int) -> list[Collection]:
    return [Collection("bw", f"idle{i:03d}", "usda", "1970", "frames") for i in range(count)]


def frame_key(collection: Collection, i: int) -> str:
    return f"{collection.prefix('georef')}19700101_1-{i}.tif"


def upload_archive(s3, bucket: str, chosen: list[Collection], frames: int, scratch: str) -> None:
    for c, collection in enumerate(chosen):
        for i in range(frames):
            path = os.path.join(scratch, "frame.tif")
            left, top = 600_000 + i * FRAME_PX[0], 3_400_000 - c * 200
            make_frame(path, "bw", *FRAME_PX, crs=UTM, bounds=(left, top - FRAME_PX[1], left + FRAME_PX[0], top),
                       collar=4)
            s3.upload_file(path, bucket, frame_key(collection, i))


def process_in_process(chosen: list[Collection], settings: Settings) -> None:
    """Each collection's DAG once, with dag.test() (no scheduler): its COGs, index and mapfile."""
    from ls4_ops.operators.collection_dags import collection_dag

    start = time.perf_counter()
    for n, collection in enumerate(chosen, 1):
        run = collection_dag(collection, settings).test()
        if run.state != "success":
            raise RuntimeError(f"{collection.dag_id}: the run that processes its frames ended {run.state}")
        if n % 20 == 0 or n == len(chosen):
            print(f"  {n}/{len(chosen)} collections processed ({time.perf_counter() - start:.0f} s)", flush=True)


def dag_runs(since: datetime | None = None) -> int:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        query = select(func.count()).select_from(DagRun)
        if since is not None:
            query = query.where(DagRun.start_date >= since)
        return session.scalar(query)


def tasks_executed(since: datetime) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(TaskInstance).where(
            TaskInstance.start_date >= since))


def unfinished_runs() -> int:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(DagRun).where(
            DagRun.state.in_(("queued", "running"))))


def collection_runs(chosen: list[Collection]) -> int:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(select(func.count(func.distinct(DagRun.dag_id))).where(
            DagRun.dag_id.in_([c.dag_id for c in chosen]), DagRun.run_type == "scheduled"))


def wait_until(what: str, check, timeout: float = IDLE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {timeout:.0f} s")
        time.sleep(5)


def s3_requests(log_path: str) -> int:
    with open(log_path, "rb") as handle:
        return len(REQUEST.findall(handle.read()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", type=int, default=200)
    parser.add_argument("--frames", type=int, default=1, help="frames per idle collection")
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    parser.add_argument("--reuse", action="store_true",
                        help="idle the archive the last run left (same --collections) instead of making it anew")
    args = parser.parse_args()

    state = os.environ["LS4_STATE_DIR"]
    chosen = collections(args.collections)
    settings = Settings.from_env()
    reuse = args.reuse and set(registry.load(settings.registry_path)) == {c.name for c in chosen}
    subprocess.run([local_stack.STACK, "stop"], check=False, capture_output=True)
    if not reuse:
        shutil.rmtree(state, ignore_errors=True)  # a fresh archive, bucket, index and Airflow database
    local_stack.start(SERVICES)
    try:
        s3 = S3Endpoint.from_env().boto3_client()
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ls4-bench-idle-") as scratch:
            if reuse:
                print(f"the archive of the last run: {len(chosen)} idle collections", flush=True)
            else:
                upload_archive(s3, settings.bucket, chosen, args.frames, scratch)
                print(f"{len(chosen)} collections of {args.frames} frames uploaded in "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
                with local_stack.postgis_engine().begin() as connection:
                    registry.store(connection, chosen)
                registry.save(settings.registry_path, chosen)
                subprocess.run([os.path.join(os.environ["LS4_VENV"], "bin", "airflow"), "db", "migrate"],
                               check=True, capture_output=True)
                process_in_process(chosen, settings)
            # The events of the set-up are no one's work now.
            S3Endpoint.from_env().boto3_client("sqs").purge_queue(QueueUrl=settings.upload_queue)

            runs_before_start = dag_runs()
            local_stack.start(["airflow"])
            wait_until("first run of every collection DAG", lambda: collection_runs(chosen) == len(chosen))
            time.sleep(60)  # the DAG processor's first passes and the runs they start
            wait_until("idle archive", lambda: unfinished_runs() == 0)
            print(f"Airflow started; {dag_runs() - runs_before_start} runs as the DAGs appeared "
                  f"(each collection's missed daily run, discovery, compiled index); idle", flush=True)

            log = os.path.join(state, "log", "s3.log")
            window_start = datetime.now(timezone.utc)
            requests_before = s3_requests(log)
            time.sleep(args.minutes * 60)
            requests = s3_requests(log) - requests_before
            runs, tasks = dag_runs(window_start), tasks_executed(window_start)
            hours = (window_start.hour, datetime.now(timezone.utc).hour)
            if settings.reconcile_hour in hours:
                print(f"note: the window overlaps the daily reconciliation hour ({settings.reconcile_hour}:00 UTC)")
            else:
                print(f"the daily reconciliation ({settings.reconcile_hour:02d}:00-{settings.reconcile_hour:02d}:59 "
                      "UTC) is outside the window")

            target = chosen[len(chosen) // 2]
            path = os.path.join(scratch, "upload.tif")
            make_frame(path, "bw", UPLOAD_PX, UPLOAD_PX, crs=UTM,
                       bounds=(610_000, 3_390_000, 610_000 + UPLOAD_PX, 3_390_000 + UPLOAD_PX), collar=20)
            number = int(time.time())  # a new upload on every run, also of a reused archive
            key = frame_key(target, number)
            cog = target.cog_key(f"19700101_1-{number}")
            start = time.perf_counter()
            s3.upload_file(path, settings.bucket, key)
            wait_until("COG of the new upload", lambda: s3.list_objects_v2(
                Bucket=settings.bucket, Prefix=cog).get("KeyCount", 0) > 0, timeout=600)
            upload_to_cog = time.perf_counter() - start
    finally:
        if args.keep_stack:
            print(f"stack left running (state in {state})")
        else:
            local_stack.stop(SERVICES + ["airflow"])
    print(f"idle: collections={len(chosen)} minutes={args.minutes:g} runs={runs} tasks={tasks} "
          f"requests={requests} upload_to_cog_s={upload_to_cog:.1f}")


if __name__ == "__main__":
    main()
