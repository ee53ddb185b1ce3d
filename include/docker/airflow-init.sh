#!/usr/bin/env bash
# The one-shot start of the compose deployment: every other Airflow service waits for it
# to complete (depends_on: service_completed_successfully). Idempotent: it runs at each
# `docker compose up`.
set -euo pipefail

airflow db migrate

# The pools that cap ls4's concurrent S3 and PostGIS work across all workers; their
# sizes come from .env (docs/deploying.md says how to choose them).
airflow pools set ls4_s3 "$LS4_S3_POOL_SLOTS" "ls4 tasks that move frames to and from S3"
airflow pools set ls4_postgis "$LS4_POSTGIS_POOL_SLOTS" "ls4 tasks that write the tile index in PostGIS"

python /opt/ls4/docker/bucket_policy.py
