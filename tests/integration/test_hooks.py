"""Ls4S3Hook and the mapfile sync against the test stack's S3 emulator."""

from __future__ import annotations

import os

from tenacity import Retrying, stop_after_delay, wait_fixed

from ls4_ops.hooks import Ls4S3Hook
from ls4_ops.settings import Settings
from tests.integration import pipeline


def test_a_key_deleted_after_listing_is_not_an_error_when_made_public(services, tmp_path):
    hook = Ls4S3Hook(aws_conn_id=Settings.from_env().s3_conn_id)
    key = "nc/hooktest/usda_1950/frames/scanned/19500101_1-1.tif"
    scan = tmp_path / "scan.tif"
    scan.write_bytes(b"II*\x00")
    pipeline.upload(str(scan), key)
    assert hook.set_public_read(pipeline.bucket(), key)
    pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=key)
    assert not hook.set_public_read(pipeline.bucket(), key)


def test_mapfile_sync_copies_new_mapfiles_and_removes_deleted_ones(services):
    key, local = "mapfiles/zz_synctest.map", os.path.join(os.environ["LS4_MAPFILE_DIR"], "zz_synctest.map")
    pipeline.s3().put_object(Bucket=pipeline.bucket(), Key=key, Body=b'MAP NAME "zz" END')
    wait_until(lambda: os.path.exists(local), f"{local} to appear")
    pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=key)
    wait_until(lambda: not os.path.exists(local), f"{local} to go")


def wait_until(condition, what: str, timeout: float = 30) -> None:
    for attempt in Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.5), reraise=True):
        with attempt:
            assert condition(), f"waited {timeout} s for {what}"
