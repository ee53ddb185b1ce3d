"""Make what ls4 publishes public as soon as the compose deployment starts.

MinIO takes no canned ACL, so ls4 runs with LS4_PUBLIC_ACCESS=policy: one statement of
the bucket policy (ls4_ops/access.py) makes its public objects public. Discovery keeps
that statement up to date on each run (LS4_APPLY_BUCKET_POLICY=true); this writes it
before the first run, so download links and the WMS work from the first upload.
"""

from ls4_ops import access
from ls4_ops.hooks import Ls4S3Hook
from ls4_ops.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    hook = Ls4S3Hook(aws_conn_id=settings.s3_conn_id)
    check = access.check_policy(hook.bucket_policy(settings.bucket), settings.bucket, apply=True)
    if check.put:
        hook.put_bucket_policy(settings.bucket, check.put)
        print(f"added the public-read statement {access.STATEMENT_ID} to the policy of {settings.bucket}")
    else:
        print(f"the policy of {settings.bucket} has the public-read statement {access.STATEMENT_ID}")


if __name__ == "__main__":
    main()
