"""Keep MapServer's mapfile folder in step with ``mapfiles/`` in the bucket.

Runs on the MapServer host (the original system used an s3fs mount there).
Uses the amazon provider's ``S3Hook.sync_to_local_dir``: files are downloaded
to a temporary name and renamed, so MapServer never reads half a mapfile, and
mapfiles removed from the bucket are removed here too.

    python -m ls4_ops.mapfile_sync --dest /path/to/mapfiles [--interval 2] [--once]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ls4_ops.hooks import Ls4S3Hook
from ls4_ops.layout import MAPFILE_PREFIX
from ls4_ops.settings import Settings

log = logging.getLogger("ls4.mapfile_sync")


def sync_once(hook: Ls4S3Hook, bucket: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    hook.sync_to_local_dir(bucket_name=bucket, local_dir=dest, s3_prefix=MAPFILE_PREFIX, delete_stale=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    hook = Ls4S3Hook(aws_conn_id=settings.s3_conn_id)
    while True:
        try:
            sync_once(hook, settings.bucket, args.dest)
        except Exception:  # a passing S3 outage must not stop the service
            if args.once:
                raise
            log.exception("mapfile sync failed; retrying in %.0f s", args.interval)
        if args.once:
            return
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
