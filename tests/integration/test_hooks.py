"""Ls4S3Hook, the mapfile sync and the S3 emulator of the test stack."""

from __future__ import annotations

import os
import time

import pytest
from botocore.exceptions import ClientError

from tenacity import Retrying, stop_after_delay, wait_fixed

from include import local_stack
from ls4_ops import mapfile
from ls4_ops.hooks import Ls4S3Hook
from ls4_ops.layout import parse_key
from ls4_ops.settings import Settings
from tests.integration import pipeline

SYNC_INTERVAL_S = 2  # the mapsync service's default --interval


def test_a_key_deleted_after_listing_is_not_an_error_when_made_public(services, tmp_path):
    hook = Ls4S3Hook(aws_conn_id=Settings.from_env().s3_conn_id)
    key = "nc/hooktest/usda_1950/frames/scanned/19500101_1-1.tif"
    scan = tmp_path / "scan.tif"
    scan.write_bytes(b"II*\x00")
    pipeline.upload(str(scan), key)
    with pipeline.acls_enabled():
        assert hook.set_public_read(pipeline.bucket(), key)
        pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=key)
        assert not hook.set_public_read(pipeline.bucket(), key)


def test_the_local_bucket_refuses_acls_as_an_aws_bucket_made_since_april_2023_does(services):
    client, key = pipeline.s3(), "nc/aclville/usda_1950/frames/scanned/19500101_1-1.tif"
    for attempt in (lambda: client.put_object(Bucket=pipeline.bucket(), Key=key, Body=b"x", ACL="public-read"),
                    lambda: client.put_object_acl(Bucket=pipeline.bucket(), Key=key, ACL="public-read")):
        with pytest.raises(ClientError, match="AccessControlListNotSupported"):
            attempt()
    client.put_object(Bucket=pipeline.bucket(), Key=key, Body=b"x", ACL="bucket-owner-full-control")
    client.delete_object(Bucket=pipeline.bucket(), Key=key)


def test_mapfile_sync_installs_valid_mapfiles_only_and_removes_deleted_ones(services):
    collection = parse_key("nc/synctest/usda_1950/frames/georef/x.tif").collection
    good = mapfile.render(mapfile.build(collection, [0, 0, 100, 100], wms_url="http://wms/", pg_service="ls4",
                                        generation=1))
    broken = good.replace("TYPE RASTER", "TYPE NOT_A_TYPE", 1)
    folder = os.environ["LS4_MAPFILE_DIR"]
    key, local = collection.mapfile_key, os.path.join(folder, os.path.basename(collection.mapfile_key))

    def put(name_key: str, text: str) -> None:
        pipeline.s3().put_object(Bucket=pipeline.bucket(), Key=name_key, Body=text.encode())

    put(key, good)
    wait_until(lambda: os.path.exists(local) and open(local).read() == good, f"{local} to appear")
    # A mapfile that fails validation is never served: the last good one stays, and a new
    # one that fails never appears at all.
    put(key, broken)
    put("mapfiles/zz_broken.map", broken)
    time.sleep(3 * SYNC_INTERVAL_S)
    assert open(local).read() == good
    assert not os.path.exists(os.path.join(folder, "zz_broken.map"))
    for name_key in (key, "mapfiles/zz_broken.map"):
        pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=name_key)
    wait_until(lambda: not os.path.exists(local), f"{local} to go")


def wait_until(condition, what: str, timeout: float = 30) -> None:
    for attempt in Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.5), reraise=True):
        with attempt:
            assert condition(), f"waited {timeout} s for {what}"


def test_the_local_s3_keeps_its_objects_across_a_restart(services):
    key = "nc/keepville/usda_1950/frames/scanned/19500101_1-1.tif"
    pipeline.s3().put_object(Bucket=pipeline.bucket(), Key=key, Body=b"II*\x00 kept", Metadata={"ls4-note": "kept"})
    local_stack.stop(["s3"])
    local_stack.start(["s3"])
    client = pipeline.s3()
    assert client.get_object(Bucket=pipeline.bucket(), Key=key)["Body"].read() == b"II*\x00 kept"
    assert client.head_object(Bucket=pipeline.bucket(), Key=key)["Metadata"] == {"ls4-note": "kept"}
    assert pipeline.readable_by_anyone(key)
    client.delete_object(Bucket=pipeline.bucket(), Key=key)
