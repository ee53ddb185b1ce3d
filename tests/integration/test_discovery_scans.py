"""What the ``ls4_discovery`` DAG does besides registering collections.

SPEC, per upload: "scanned upload: set ACL public-read. Nothing else." The
bucket policy makes scans public (access.py); where ACLs are used instead,
a collection's DAG sets them on its own scans, but a collection only gets a
DAG once it has a georef upload; until then the ``ls4_discovery`` DAG does
it. It also reports a folder whose collection name another folder already
has, and writes the policy's public-read statement when it is missing.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from sqlalchemy import text

from include import local_stack
from ls4_ops import access, registry
from ls4_ops.layout import parse_key
from tests.integration import pipeline

pytestmark = pytest.mark.usefixtures("airflow_db")

# A collection no other test uses, with scans only.
FIRST = "nc/scanville/usda_1955/frames/scanned/19550101_1-1.tif"
SECOND = "nc/scanville/usda_1955/frames/scanned/19550101_1-2.TIF"
COLLECTION = parse_key(FIRST).collection


def test_where_acls_are_used_discovery_makes_new_scans_of_a_collection_without_georef_public_read(
        services, tmp_path):
    scan = tmp_path / "scan.tif"
    scan.write_bytes(b"II*\x00 a scan")
    with pipeline.acls_enabled():
        pipeline.upload(str(scan), FIRST)
        assert not pipeline.has_public_read_acl(FIRST)
        # S3 lists modification times in whole seconds; an object from the second a
        # run began counts as new for the next run, so let that second pass.
        time.sleep(1.1)

        collections = pipeline.discover()
        assert pipeline.has_public_read_acl(FIRST)
        assert COLLECTION.name not in collections  # scans alone make no collection DAG

        # Only scans new since the last successful discovery run are touched: an
        # older scan whose ACL someone changed since is left as it is.
        pipeline.s3().put_object_acl(Bucket=pipeline.bucket(), Key=FIRST, ACL="private")
        pipeline.upload(str(scan), SECOND)
        collections = pipeline.discover()
        assert pipeline.has_public_read_acl(SECOND)
        assert not pipeline.has_public_read_acl(FIRST)
        assert COLLECTION.name not in collections


def test_discovery_writes_the_policys_public_read_statement_and_keeps_the_others(services):
    client, bucket = pipeline.s3(), pipeline.bucket()
    other = {"Sid": "someoneElses", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": f"arn:aws:s3:::{bucket}/read-only/*"}
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [other]}))
    scan = "nc/policyville/usda_1957/frames/scanned/19570101_1-1.tif"
    client.put_object(Bucket=bucket, Key=scan, Body=b"II*\x00 a scan")
    assert not pipeline.readable_by_anyone(scan)
    pipeline.discover()
    statements = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert other in statements and access.public_read_statement(bucket) in statements
    assert pipeline.readable_by_anyone(scan)
    # The bucket refuses ACLs, and ls4 set none.
    assert not pipeline.has_public_read_acl(scan)
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(access.with_public_read(None, bucket)))


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
        name = parse_key(first).collection.name
        with local_stack.postgis_engine().begin() as connection:
            connection.execute(text(f"DELETE FROM {registry.TABLE} WHERE name = :name"), {"name": name})
        path = os.environ["LS4_REGISTRY"]
        registry.save(path, [c for c in registry.load(path).values() if c.name != name])
