"""Which objects the public may read, and the bucket policy that lets them.

AWS buckets made since April 2023 have ACLs disabled (Object Ownership
"bucket owner enforced": PutObjectAcl and canned ACLs fail), and MinIO takes
no canned ACL but private. So ls4 makes its public objects public with one
statement of the bucket policy over their key patterns (``Sid`` ``ls4PublicRead``;
other statements of the policy are kept as they are). Per-object ACLs are
used only where ``LS4_PUBLIC_ACCESS=acl`` asks for them.

Public: uploads (scans and georef TIFFs, as the original made them), what
ls4 publishes under each collection's ``cog/`` (COGs, the tile index's
shapefile and zip, the collection overview), the compiled GeoJSON and the
preview pages. Never: intermediates (``ls4-work/``), mapfiles, or anything
else. A policy's ``*`` also matches ``/``, so a scan in a sub-folder of
``scanned/`` is readable too (an ACL would not have been set on it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from botocore.exceptions import ClientError

from ls4_ops.layout import BANDS, COMPILED_INDEX_KEY, MAPFILE_PREFIX, PREVIEW_EXTENSION, UPLOAD_EXTENSIONS

STATEMENT_ID = "ls4PublicRead"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"

PUBLIC_KEY_PATTERNS = tuple(
    [f"{band}/*/{stage}/*{extension}" for band in BANDS for stage in ("scanned", "georef")
     for extension in UPLOAD_EXTENSIONS]
    + [f"{band}/*/cog/*" for band in BANDS]
    + [COMPILED_INDEX_KEY, f"{MAPFILE_PREFIX}*{PREVIEW_EXTENSION}"])


def public_read_statement(bucket: str) -> dict:
    return {"Sid": STATEMENT_ID, "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": [f"arn:aws:s3:::{bucket}/{pattern}" for pattern in PUBLIC_KEY_PATTERNS]}


def _statements(policy: dict | None) -> list[dict]:
    statements = (policy or {}).get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def grants_public_read(policy: dict | None, bucket: str) -> bool:
    """Whether ``policy`` has ls4's statement as ls4 would write it."""
    wanted = public_read_statement(bucket)
    return any(statement.get("Sid") == STATEMENT_ID and statement.get("Effect") == "Allow"
               and statement.get("Principal") in ("*", {"AWS": "*"})
               and sorted(_as_list(statement.get("Action"))) == [wanted["Action"]]
               and sorted(_as_list(statement.get("Resource"))) == sorted(wanted["Resource"])
               for statement in _statements(policy))


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def with_public_read(policy: dict | None, bucket: str) -> dict:
    """``policy`` with ls4's statement added or brought up to date; its other statements kept."""
    updated = copy.deepcopy(policy) if policy else {"Version": "2012-10-17"}
    updated["Statement"] = [s for s in _statements(policy) if s.get("Sid") != STATEMENT_ID]
    updated["Statement"].append(public_read_statement(bucket))
    return updated


@dataclass(frozen=True)
class PolicyCheck:
    """What to do about the bucket's policy: write ``put``, or tell operators ``problem``."""

    put: dict | None = None
    problem: str = ""
    version: str = ""  # of the policy found: the same problem with the same policy is told once


def check_policy(policy: dict | None, bucket: str, *, apply: bool) -> PolicyCheck:
    version = hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:16]
    if grants_public_read(policy, bucket):
        return PolicyCheck(version=version)
    if apply:
        return PolicyCheck(put=with_public_read(policy, bucket), version=version)
    return PolicyCheck(problem=(
        f"the policy of bucket {bucket} does not let the public read what ls4 publishes (scans, COGs, tile "
        "indexes, the compiled GeoJSON, preview pages), so download links and the WMS fail: add this "
        "statement to it, or set LS4_APPLY_BUCKET_POLICY=true to let ls4 add it: "
        + json.dumps(public_read_statement(bucket))), version=version)


def unreadable_policy(bucket: str, error: Exception) -> str:
    return (f"ls4 cannot read the policy of bucket {bucket} ({error}), so it cannot tell whether what it "
            "publishes is public: allow it s3:GetBucketPolicy, or check the policy yourself (README, Public access)")


def unwritable_policy(bucket: str, error: Exception) -> str:
    return (f"ls4 could not add its public-read statement to the policy of bucket {bucket} ({error}); with "
            "Block Public Access on, turn off its policy settings for this bucket, or add the statement yourself")


# --- what a bucket actually lets anyone read (for checks of objects ls4 did not write) ----------

def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def bucket_policy(s3_client, bucket: str) -> dict | None:
    """The bucket's policy; None when it has none."""
    try:
        return json.loads(s3_client.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as error:
        if error_code(error) != "NoSuchBucketPolicy":
            raise
        return None


def _aws_wildcard(pattern: str, flags: int = 0) -> re.Pattern:
    """A policy's ``*`` and ``?`` wildcards as a regular expression."""
    return re.compile(".*".join(".".join(map(re.escape, part.split("?"))) for part in pattern.split("*")), flags)


def policy_lets_anyone_read(policy: Mapping | None, bucket: str, key: str) -> bool:
    """Whether a bucket policy lets anonymous users GET ``key``: an unconditional Allow of
    ``s3:GetObject`` to ``*`` that names the object, and no unconditional Deny of it."""
    resource = f"arn:aws:s3:::{bucket}/{key}"
    allowed = False
    for statement in _statements(policy):
        principal = statement.get("Principal")
        anyone = principal == "*" or isinstance(principal, Mapping) and "*" in _as_list(principal.get("AWS"))
        if not anyone or "Condition" in statement or not {"Action", "Resource"} <= set(statement):
            continue  # NotAction, NotResource, conditions: not proof either way
        # Action names are case-insensitive, object keys are not.
        matches = any(_aws_wildcard(action, re.IGNORECASE).fullmatch("s3:GetObject")
                      for action in _as_list(statement["Action"])) \
            and any(_aws_wildcard(pattern).fullmatch(resource) for pattern in _as_list(statement["Resource"]))
        if matches and statement.get("Effect") == "Deny":
            return False
        allowed = allowed or (matches and statement.get("Effect") == "Allow")
    return allowed


def acl_lets_anyone_read(grants: Iterable[Mapping]) -> bool:
    return any(grant.get("Grantee", {}).get("URI") == ALL_USERS and grant.get("Permission") in ("READ", "FULL_CONTROL")
               for grant in grants)
