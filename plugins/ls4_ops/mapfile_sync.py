"""Keep MapServer's mapfile folder in step with ``mapfiles/`` in the bucket.

Runs on the MapServer host (the original system used an s3fs mount there).
A new or changed mapfile is downloaded beside its place, checked (it must
parse and validate for MapServer 8) and only then renamed into place, so
MapServer never reads half a mapfile nor one that failed validation: the
last good one stays, and the log says why. The collections' preview pages
(``NAME.html``, which the web server publishes) come along the same way,
unchecked. Files removed from the bucket are removed here too.

Where the bucket sends ``mapfiles/`` events to an SQS queue
(``LS4_MAPFILE_QUEUE``), the sync long-polls it and lists ``mapfiles/`` when
an event comes (and every ``--full-every`` seconds, for an event lost): about
three requests a minute when nothing changes. Without a queue it lists
``mapfiles/`` every ``--interval`` seconds.

    python -m ls4_ops.mapfile_sync --dest /path/to/mapfiles [--interval 2] [--full-every 600] [--once]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import time
from pathlib import Path

from airflow.providers.amazon.aws.hooks.sqs import SqsHook

from ls4_ops import mapfile
from ls4_ops.hooks import Ls4S3Hook
from ls4_ops.layout import MAPFILE_PREFIX
from ls4_ops.settings import Settings

log = logging.getLogger("ls4.mapfile_sync")

# What MapServer's MS_MAP_PATTERN and the web server's /preview/ let through
# (include/stack/stack.sh).
SYNCED_NAME = re.compile(r"[a-z0-9_]+\.(map|html)")


def sync_once(hook: Ls4S3Hook, bucket: str, dest: Path, seen: dict[str, str]) -> None:
    """One pass. ``seen`` maps each file to the ETag last looked at (kept between
    passes; a new process looks at every file once)."""
    dest.mkdir(parents=True, exist_ok=True)
    listed = {obj.key.removeprefix(MAPFILE_PREFIX): obj.etag
              for obj in hook.list_objects(bucket, MAPFILE_PREFIX)}
    for name, etag in listed.items():
        if not SYNCED_NAME.fullmatch(name) or seen.get(name) == etag:
            continue
        seen[name] = etag  # a mapfile refused is not looked at again until it changes
        staged = dest / f".{name}.staged"
        hook.get_conn().download_file(bucket, MAPFILE_PREFIX + name, str(staged))
        problems = mapfile.problems(staged.read_text(errors="replace")) if name.endswith(".map") else []
        if problems:
            staged.unlink()
            log.error("%s%s fails validation and is not served (the last good one stays): %s",
                      MAPFILE_PREFIX, name, "; ".join(problems))
            continue
        os.replace(staged, dest / name)
        log.info("installed %s%s", MAPFILE_PREFIX, name)
    for path in dest.iterdir():
        if SYNCED_NAME.fullmatch(path.name) and path.name not in listed:
            path.unlink()
            seen.pop(path.name, None)
            log.info("removed %s: it is gone from the bucket", path.name)


SQS_WAIT_S = 20  # the longest long poll SQS allows


def wait_for_event(sqs, queue_url: str, at_most: float) -> None:
    """Return when the queue has a message (all waiting ones are deleted: one sync
    answers them all) or after ``at_most`` seconds."""
    deadline = time.monotonic() + at_most
    while (left := deadline - time.monotonic()) > 0:
        # Rounded up: a wait of 0 returns at once, and the last second would be a busy loop.
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=min(SQS_WAIT_S, math.ceil(left))).get("Messages", [])
        if messages:
            while messages:
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between listings without a queue")
    parser.add_argument("--full-every", type=float, default=600.0, help="seconds between listings with a queue")
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    hook = Ls4S3Hook(aws_conn_id=settings.s3_conn_id)
    sqs = SqsHook(aws_conn_id=settings.s3_conn_id).get_conn() if settings.mapfile_queue else None
    seen: dict[str, str] = {}
    while True:
        try:
            sync_once(hook, settings.bucket, args.dest, seen)
        except Exception:  # a passing S3 outage must not stop the service
            if args.once:
                raise
            log.exception("mapfile sync failed; retrying in %.0f s", args.interval)
            time.sleep(args.interval)
            continue
        if args.once:
            return
        if not settings.mapfile_queue:
            time.sleep(args.interval)
            continue
        try:
            wait_for_event(sqs, settings.mapfile_queue, args.full_every)
        except Exception:  # the queue gone or unreachable: list instead, and try it again
            log.exception("waiting on %s failed; listing in %.0f s", settings.mapfile_queue, args.interval)
            time.sleep(args.interval)


if __name__ == "__main__":
    main()
