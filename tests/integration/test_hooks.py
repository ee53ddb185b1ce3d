"""Ls4S3Hook against the test stack's S3 emulator."""

from __future__ import annotations

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
