"""Public access by the bucket policy: which keys, and the statement ls4 keeps in it."""

import json

import pytest

from ls4_ops import access
from ls4_ops.layout import COMPILED_INDEX_KEY, parse_key
from ls4_ops.settings import Settings

COLLECTION = parse_key("nc/anderson/tops_1975/frames/georef/x.tif").collection


@pytest.mark.parametrize("key", [
    "nc/anderson/tops_1975/frames/scanned/19750312_4-1.TIF",
    "bw/anderson/ams_1960/frames/georef/19600105_1.tif",
    COLLECTION.cog_key("19750312_4-1"),
    COLLECTION.tile_index_zip_key,
    COLLECTION.tile_index_key(".shp"),
    COLLECTION.overview_key(3, 14),
    COMPILED_INDEX_KEY,
    COLLECTION.preview_key,
])
def test_what_ls4_publishes_and_the_uploads_are_public(key):
    assert access.policy_lets_anyone_read(access.with_public_read(None, "ls4"), "ls4", key)


@pytest.mark.parametrize("key", [
    COLLECTION.mapfile_key,
    COLLECTION.work_key("19750312_4-1", "etag", "compressed.tif"),
    "nc/anderson/tops_1975/frames/scanned/notes.txt",
    "registry.json",
    "geojson/other.geojson",
])
def test_mapfiles_intermediates_and_other_objects_are_not(key):
    assert not access.policy_lets_anyone_read(access.with_public_read(None, "ls4"), "ls4", key)


def test_the_statement_is_added_beside_the_others_and_brought_up_to_date():
    other = {"Sid": "logs", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::ls4/logs/*"}
    outdated = {**access.public_read_statement("ls4"), "Resource": ["arn:aws:s3:::ls4/nc/*"]}
    policy = access.with_public_read({"Version": "2012-10-17", "Statement": [other, outdated]}, "ls4")
    assert policy["Statement"] == [other, access.public_read_statement("ls4")]
    assert access.grants_public_read(policy, "ls4")
    assert not access.grants_public_read({"Statement": [other, outdated]}, "ls4")
    assert not access.grants_public_read(None, "ls4")
    assert not access.grants_public_read(policy, "another-bucket")


def test_a_missing_statement_is_written_where_allowed_and_reported_otherwise():
    assert access.check_policy(access.with_public_read(None, "ls4"), "ls4", apply=False) == \
        access.PolicyCheck(version=access.check_policy(access.with_public_read(None, "ls4"), "ls4", apply=True).version)
    written = access.check_policy(None, "ls4", apply=True)
    assert written.put == access.with_public_read(None, "ls4") and not written.problem
    reported = access.check_policy(None, "ls4", apply=False)
    assert reported.put is None and "LS4_APPLY_BUCKET_POLICY=true" in reported.problem
    assert json.dumps(access.public_read_statement("ls4")) in reported.problem
    # Told once per version of the policy found.
    assert reported.version == access.check_policy(None, "ls4", apply=False).version
    assert reported.version != access.check_policy({"Statement": []}, "ls4", apply=False).version


def test_the_access_mode_is_policy_unless_acls_are_asked_for():
    assert not Settings.from_env({}).uses_acls
    assert Settings.from_env({"LS4_PUBLIC_ACCESS": "acl"}).uses_acls
    with pytest.raises(ValueError, match="LS4_PUBLIC_ACCESS='acls'"):
        Settings.from_env({"LS4_PUBLIC_ACCESS": "acls"})


# --- what a policy or an ACL someone else wrote lets anyone read (maintenance's checks) ---

BUCKET = "ls4"
SCAN = "nc/anderson/ams_1960/frames/scanned/19600101_1-1.tif"


def statement(effect="Allow", principal="*", action="s3:GetObject", resource=f"arn:aws:s3:::{BUCKET}/*", **more):
    return {"Effect": effect, "Principal": principal, "Action": action, "Resource": resource, **more}


@pytest.mark.parametrize("policy, public", [
    (None, False),
    ({"Statement": [statement()]}, True),
    ({"Statement": statement(principal={"AWS": ["*"]}, action=["s3:Get*"])}, True),
    ({"Statement": [statement(resource=f"arn:aws:s3:::{BUCKET}/*/scanned/*")]}, True),
    ({"Statement": [statement(resource=f"arn:aws:s3:::{BUCKET}/*/SCANNED/*")]}, False),  # keys are case-sensitive
    ({"Statement": [statement(action="S3:getobject")]}, True),  # actions are not
    ({"Statement": [statement(resource="arn:aws:s3:::other/*")]}, False),
    ({"Statement": [statement(principal={"AWS": "arn:aws:iam::1:root"})]}, False),
    ({"Statement": [statement(action="s3:PutObject")]}, False),
    ({"Statement": [statement(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})]}, False),
    ({"Statement": [statement(), statement(effect="Deny", resource=f"arn:aws:s3:::{BUCKET}/nc/*")]}, False),
    ({"Statement": [statement(), statement(effect="Deny", Condition={"Bool": {"aws:SecureTransport": "false"}})]},
     True),
])
def test_a_bucket_policy_makes_a_scan_public_only_when_it_lets_anyone_get_it(policy, public):
    assert access.policy_lets_anyone_read(policy, BUCKET, SCAN) is public


def test_an_acl_makes_a_scan_public_when_all_users_may_read_it():
    owner = {"Grantee": {"Type": "CanonicalUser", "ID": "x"}, "Permission": "FULL_CONTROL"}
    everyone = {"Grantee": {"Type": "Group", "URI": access.ALL_USERS}, "Permission": "READ"}
    authenticated = {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"},
                     "Permission": "READ"}
    assert access.acl_lets_anyone_read([owner, everyone])
    assert not access.acl_lets_anyone_read([owner, authenticated])
