"""What the ``ls4_discovery`` DAG does besides registering collections.

SPEC, per upload: "scanned upload: set ACL public-read. Nothing else." A
collection's DAG does it for its own scans, but a collection only gets a DAG
once it has a georef upload; until then the ``ls4_discovery`` DAG does it.
It also reports a folder whose collection name another folder already has.
"""

from __future__ import annotations

import os
import time

import pytest

from ls4_ops import registry
from ls4_ops.layout import parse_key
from tests.integration import pipeline

pytestmark = pytest.mark.usefixtures("airflow_db")

# A collection no other test uses, with scans only.
FIRST = "nc/scanville/usda_1955/frames/scanned/19550101_1-1.tif"
SECOND = "nc/scanville/usda_1955/frames/scanned/19550101_1-2.TIF"
COLLECTION = parse_key(FIRST).collection


def public_read(key: str) -> bool:
    grants = pipeline.s3().get_object_acl(Bucket=pipeline.bucket(), Key=key)["Grants"]
    return any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)


def test_discovery_makes_new_scans_of_a_collection_without_georef_public_read(services, tmp_path):
    scan = tmp_path / "scan.tif"
    scan.write_bytes(b"II*\x00 a scan")
    pipeline.upload(str(scan), FIRST)
    assert not public_read(FIRST)
    # S3 lists modification times in whole seconds; an object from the second a
    # run began counts as new for the next run, so let that second pass.
    time.sleep(1.1)

    collections = pipeline.discover()
    assert public_read(FIRST)
    assert COLLECTION.name not in collections  # scans alone make no collection DAG

    # Only scans new since the last successful discovery run are touched: an
    # older scan whose ACL someone changed since is left as it is.
    pipeline.s3().put_object_acl(Bucket=pipeline.bucket(), Key=FIRST, ACL="private")
    pipeline.upload(str(scan), SECOND)
    collections = pipeline.discover()
    assert public_read(SECOND)
    assert not public_read(FIRST)
    assert COLLECTION.name not in collections


def test_a_second_folder_with_a_registered_name_is_reported_not_registered(services, tmp_path):
    first = "bw/clashville/ams_1961/frames/georef/19610101_1.tif"
    second = "nc/clashville/ams_1961/frames/georef/19610101_2.tif"
    frame = tmp_path / "frame.tif"
    frame.write_bytes(b"II*\x00 not read by discovery")
    pipeline.upload(str(frame), first)
    pipeline.upload(str(frame), second)
    try:
        collections = pipeline.discover()
        assert collections[parse_key(first).collection.name] == parse_key(first).collection
        reported = [n for n in pipeline.notifications() if n["subject"] == "collection not registered"]
        assert [n["key"] for n in reported] == [second]
        assert "bw/clashville/ams_1961/frames/ already has" in reported[0]["reason"]
    finally:
        # Keep the bogus frames away from the scheduler test that runs later.
        for key in (first, second):
            pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=key)
        path = os.environ["LS4_REGISTRY"]
        name = parse_key(first).collection.name
        registry.save(path, [c for c in registry.load(path).values() if c.name != name])
