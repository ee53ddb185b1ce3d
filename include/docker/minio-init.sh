#!/bin/sh
# The one-shot start of MinIO for the compose deployment (runs in MinIO's own image, for
# its `mc`): ls4's buckets, and ls4's own credentials, allowed those buckets only (the
# root credentials stay with MinIO). Idempotent: it runs at each `docker compose up`.
# No ACL is set anywhere: MinIO takes no canned ACL, and ls4 makes its public objects
# public through the bucket policy (airflow-init writes its statement).
set -eu

mc alias set ls4-minio http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "ls4-minio/$LS4_BUCKET" "ls4-minio/$LOG_BUCKET"

# printf, a shell builtin: MinIO's minimal image has few other commands.
policy=/tmp/ls4-user-policy.json
printf '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": [%s]}]}\n' \
    "\"arn:aws:s3:::$LS4_BUCKET\", \"arn:aws:s3:::$LS4_BUCKET/*\", \"arn:aws:s3:::$LOG_BUCKET\", \"arn:aws:s3:::$LOG_BUCKET/*\"" \
    >"$policy"
mc admin policy create ls4-minio ls4 "$policy"
# Adding a user that exists sets its secret key: a key changed in .env takes effect here.
mc admin user add ls4-minio "$LS4_S3_ACCESS_KEY" "$LS4_S3_SECRET_KEY"
if ! attached="$(mc admin policy attach ls4-minio ls4 --user "$LS4_S3_ACCESS_KEY" 2>&1)"; then
    case "$attached" in
        *"already in effect"*) ;;  # attached by an earlier start
        *) echo "$attached" >&2; exit 1 ;;
    esac
fi
echo "minio: buckets $LS4_BUCKET and $LOG_BUCKET, user $LS4_S3_ACCESS_KEY with policy ls4"
