# shellcheck shell=bash
# ls4 environment: source it (`. include/stack/env.sh`), don't run it.
#
# Every value is a default that applies only when the variable is unset, so
# a caller overrides by exporting before sourcing, e.g. a test stack:
#   LS4_STATE_DIR=.state/test LS4_S3_ENDPOINT=http://127.0.0.1:19000 \
#   LS4_PG_PORT=15433 LS4_WMS_PORT=18081 LS4_AIRFLOW_PORT=18080 \
#     include/stack/stack.sh start
# Derived values (URLs, dirs, connections) are computed from the ones above
# them, so set overrides before the first `source` in a shell.
# Exceptions: LS4_ROOT always follows this file's location, and the two
# AIRFLOW_CONN_* values are always rebuilt from the LS4_* ones.

LS4_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
export LS4_ROOT

: "${LS4_STATE_DIR:=$LS4_ROOT/.state}"
case "$LS4_STATE_DIR" in /*) ;; *) LS4_STATE_DIR="$LS4_ROOT/$LS4_STATE_DIR" ;; esac
: "${LS4_VENV:=$LS4_ROOT/.venv}"
case "$LS4_VENV" in /*) ;; *) LS4_VENV="$LS4_ROOT/$LS4_VENV" ;; esac
export LS4_STATE_DIR LS4_VENV

# --- S3 (moto_server locally; any S3 endpoint works) -----------------------
: "${LS4_S3_ENDPOINT:=http://127.0.0.1:9000}"
: "${LS4_BUCKET:=ls4}"
: "${LS4_S3_ACCESS_KEY:=ls4}"
: "${LS4_S3_SECRET_KEY:=ls4secret}"
: "${LS4_S3_REGION:=us-east-1}"
: "${LS4_PUBLIC_URL:=${LS4_S3_ENDPOINT%/}/$LS4_BUCKET}"
export LS4_S3_ENDPOINT LS4_BUCKET LS4_S3_ACCESS_KEY LS4_S3_SECRET_KEY \
    LS4_S3_REGION LS4_PUBLIC_URL

# --- Bucket events (SQS queues; locally the S3 emulator's own) ---------------
# Set LS4_UPLOAD_QUEUE= (empty) for a bucket that sends no events: discovery
# then polls it. An empty LS4_MAPFILE_QUEUE makes the mapfile sync poll.
: "${LS4_UPLOAD_QUEUE=${LS4_S3_ENDPOINT%/}/123456789012/ls4-uploads}"
: "${LS4_MAPFILE_QUEUE=${LS4_S3_ENDPOINT%/}/123456789012/ls4-mapfiles}"
export LS4_UPLOAD_QUEUE LS4_MAPFILE_QUEUE

# --- Public access (ls4_ops/access.py): by the bucket policy (ACLs disabled on
# the bucket, as on AWS buckets made since April 2023), or LS4_PUBLIC_ACCESS=acl.
# The local stack lets ls4 write the policy's public-read statement.
: "${LS4_PUBLIC_ACCESS:=policy}"
: "${LS4_APPLY_BUCKET_POLICY:=true}"
export LS4_PUBLIC_ACCESS LS4_APPLY_BUCKET_POLICY

# --- Notifications: an SNS topic (locally the S3 emulator's own), besides
# LS4_NOTIFY below. Set LS4_SNS_TOPIC_ARN= (empty) to publish to none.
: "${LS4_SNS_TOPIC_ARN=arn:aws:sns:$LS4_S3_REGION:123456789012:ls4-notifications}"
export LS4_SNS_TOPIC_ARN

# --- PostGIS ------------------------------------------------------------------
: "${LS4_PG_HOST:=127.0.0.1}"
: "${LS4_PG_PORT:=5433}"
: "${LS4_PG_DB:=ls4}"
: "${LS4_PG_USER:=ls4}"
: "${LS4_PG_PASSWORD:=ls4pass}"
export LS4_PG_HOST LS4_PG_PORT LS4_PG_DB LS4_PG_USER LS4_PG_PASSWORD

# --- MapServer (WMS) ----------------------------------------------------------
: "${LS4_WMS_PORT:=8081}"
: "${LS4_WMS_URL:=http://127.0.0.1:$LS4_WMS_PORT/wms/}"
: "${LS4_MAPFILE_DIR:=$LS4_STATE_DIR/mapserver/mapfiles}"
: "${LS4_PG_SERVICE:=ls4}"
export LS4_WMS_PORT LS4_WMS_URL LS4_MAPFILE_DIR LS4_PG_SERVICE

# --- Airflow ------------------------------------------------------------------
: "${LS4_AIRFLOW_PORT:=8080}"
: "${AIRFLOW_HOME:=$LS4_STATE_DIR/airflow}"
: "${AIRFLOW__CORE__DAGS_FOLDER:=$LS4_ROOT/dags}"
: "${AIRFLOW__CORE__PLUGINS_FOLDER:=$LS4_ROOT/plugins}"
: "${AIRFLOW__CORE__LOAD_EXAMPLES:=False}"
: "${AIRFLOW__CORE__PARALLELISM:=4}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS:=True}"
: "${AIRFLOW__API__HOST:=127.0.0.1}"
: "${AIRFLOW__API__PORT:=$LS4_AIRFLOW_PORT}"
# The links in notifications (a task's page and log) start here.
: "${AIRFLOW__API__BASE_URL:=http://127.0.0.1:$LS4_AIRFLOW_PORT/}"
# Task workers reach the API server here. Airflow's default is
# http://localhost:8080/execution/ whatever [api] port says, so a stack on
# another port would send its tasks to someone else's API server.
: "${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:=http://127.0.0.1:$LS4_AIRFLOW_PORT/execution/}"
# The workers' and triggerer's log servers listen on fixed ports (8793, 8794
# by default) on all interfaces: derive them too, or two stacks collide.
: "${AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT:=$((LS4_AIRFLOW_PORT + 713))}"
: "${AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT:=$((LS4_AIRFLOW_PORT + 714))}"
: "${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:=20}"
: "${AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL:=20}"
: "${LS4_REGISTRY:=$LS4_STATE_DIR/registry.json}"
: "${LS4_NOTIFY:=file:$LS4_STATE_DIR/notifications.jsonl}"
export LS4_AIRFLOW_PORT AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER \
    AIRFLOW__CORE__PLUGINS_FOLDER AIRFLOW__CORE__LOAD_EXAMPLES \
    AIRFLOW__CORE__PARALLELISM AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS \
    AIRFLOW__API__HOST AIRFLOW__API__PORT AIRFLOW__API__BASE_URL AIRFLOW__CORE__EXECUTION_API_SERVER_URL \
    AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT \
    AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL \
    AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL LS4_REGISTRY LS4_NOTIFY

# --- Executor -----------------------------------------------------------------
# local: `airflow standalone` (LocalExecutor). celery: what a scaled-out
# deployment runs, on this machine: scheduler, dag-processor, triggerer and API
# server as separate processes, Celery workers (one serving the raster queue,
# one the default queue, each with its own scratch folder and registry copy),
# Redis as the broker, and Airflow's metadata in database LS4_AIRFLOW_DB of the
# PostGIS cluster. See README.md beside this file.
: "${LS4_EXECUTOR:=local}"
: "${LS4_REDIS_PORT:=6380}"
: "${LS4_AIRFLOW_DB:=airflow}"
: "${LS4_RASTER_QUEUE:=raster}"
# Tasks at once: raster work on the raster worker, anything else on the default one.
: "${LS4_RASTER_CONCURRENCY:=2}"
: "${LS4_DEFAULT_CONCURRENCY:=4}"
export LS4_EXECUTOR LS4_REDIS_PORT LS4_AIRFLOW_DB LS4_RASTER_QUEUE LS4_RASTER_CONCURRENCY LS4_DEFAULT_CONCURRENCY
if [ "$LS4_EXECUTOR" = celery ]; then
    # URL-encoded, so that any character of the user or password is safe in a URL.
    _ls4_url_part() {
        local LC_ALL=C s=$1 out="" c i  # byte by byte: UTF-8 is encoded as its bytes
        for ((i = 0; i < ${#s}; i++)); do
            c=${s:i:1}
            case "$c" in [A-Za-z0-9._~-]) out+=$c ;; *) printf -v c '%%%02X' "'$c"; out+=$c ;; esac
        done
        printf %s "$out"
    }
    _ls4_pg="$(_ls4_url_part "$LS4_PG_USER"):$(_ls4_url_part "$LS4_PG_PASSWORD")@$LS4_PG_HOST:$LS4_PG_PORT"
    _ls4_pg+="/$(_ls4_url_part "$LS4_AIRFLOW_DB")"
    AIRFLOW__CORE__EXECUTOR=CeleryExecutor
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$_ls4_pg"
    AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+psycopg2://$_ls4_pg"
    AIRFLOW__CELERY__BROKER_URL="redis://127.0.0.1:$LS4_REDIS_PORT/0"
    export AIRFLOW__CORE__EXECUTOR AIRFLOW__DATABASE__SQL_ALCHEMY_CONN AIRFLOW__CELERY__RESULT_BACKEND \
        AIRFLOW__CELERY__BROKER_URL
    unset -f _ls4_url_part
    unset _ls4_pg
fi

case ":${PYTHONPATH:-}:" in
    *":$LS4_ROOT/plugins:"*) ;;
    *) PYTHONPATH="$LS4_ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}" ;;
esac
export PYTHONPATH

# JSON string literal of $1 (escapes backslash and double quote).
_ls4_json() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

AIRFLOW_CONN_LS4_S3="$(printf \
    '{"conn_type":"aws","login":%s,"password":%s,"extra":{"endpoint_url":%s,"region_name":%s}}' \
    "$(_ls4_json "$LS4_S3_ACCESS_KEY")" "$(_ls4_json "$LS4_S3_SECRET_KEY")" \
    "$(_ls4_json "$LS4_S3_ENDPOINT")" "$(_ls4_json "$LS4_S3_REGION")")"
AIRFLOW_CONN_LS4_POSTGIS="$(printf \
    '{"conn_type":"postgres","host":%s,"port":%s,"login":%s,"password":%s,"schema":%s}' \
    "$(_ls4_json "$LS4_PG_HOST")" "$LS4_PG_PORT" "$(_ls4_json "$LS4_PG_USER")" \
    "$(_ls4_json "$LS4_PG_PASSWORD")" "$(_ls4_json "$LS4_PG_DB")")"
export AIRFLOW_CONN_LS4_S3 AIRFLOW_CONN_LS4_POSTGIS
unset -f _ls4_json

# --- GDAL ---------------------------------------------------------------------
: "${GDAL_DISABLE_READDIR_ON_OPEN:=EMPTY_DIR}"
export GDAL_DISABLE_READDIR_ON_OPEN
