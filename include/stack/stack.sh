#!/usr/bin/env bash
# Local services of ls4, no Docker: S3 (moto, kept on disk), PostGIS, MapServer (lighttpd +
# FastCGI mapserv), the mapfile sync loop and Airflow.
#
#   stack.sh start   [svc...]   start (no svc = all, in dependency order)
#   stack.sh stop    [svc...]   stop (no svc = all, in reverse order); data stays
#   stack.sh restart [svc...]
#   stack.sh status  [svc...]   exit 0 when every listed service is running
#
# Services: s3 postgis mapserver mapsync airflow; with LS4_EXECUTOR=celery,
# redis and the Airflow components in place of airflow (which then names them
# all): airflow-api airflow-scheduler airflow-dag-processor airflow-triggerer
# worker-raster worker-default. All settings come from env.sh; see README.md
# beside this file.
set -euo pipefail
# shellcheck source=include/stack/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
umask 022

say() { printf '%-10s %s\n' "$1:" "$2"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }

CELERY_AIRFLOW=(airflow-api airflow-scheduler airflow-dag-processor airflow-triggerer worker-raster worker-default)
case "$LS4_EXECUTOR" in
    local) SERVICES=(s3 postgis mapserver mapsync airflow) ;;
    celery) SERVICES=(s3 postgis redis mapserver mapsync "${CELERY_AIRFLOW[@]}") ;;
    *) die "LS4_EXECUTOR=$LS4_EXECUTOR: expected local or celery" ;;
esac
RUN_DIR="$LS4_STATE_DIR/run"
LOG_DIR="$LS4_STATE_DIR/log"
PG_BIN=/usr/lib/postgresql/15/bin
MS_LINK="$LS4_STATE_DIR/mapserver"
MAPSERV=/usr/lib/cgi-bin/mapserv
MS_USER=www-data   # lighttpd drops to this user when started as root

s3_addr="${LS4_S3_ENDPOINT#*://}"
s3_addr="${s3_addr%%/*}"
S3_HOST="${s3_addr%:*}"
S3_PORT="${s3_addr##*:}"
[ "$S3_PORT" != "$s3_addr" ] || die "LS4_S3_ENDPOINT needs an explicit port: $LS4_S3_ENDPOINT"

declare -A PORT=([s3]="$S3_HOST:$S3_PORT" [postgis]="$LS4_PG_HOST:$LS4_PG_PORT"
    [mapserver]="127.0.0.1:$LS4_WMS_PORT" [airflow]="$AIRFLOW__API__HOST:$LS4_AIRFLOW_PORT"
    [redis]="127.0.0.1:$LS4_REDIS_PORT" [airflow-api]="$AIRFLOW__API__HOST:$LS4_AIRFLOW_PORT")
declare -A TIMEOUT=([s3]=30 [postgis]=60 [mapserver]=20 [mapsync]=10 [airflow]=240 [redis]=20
    [airflow-api]=240 [airflow-scheduler]=120 [airflow-dag-processor]=120 [airflow-triggerer]=120
    [worker-raster]=120 [worker-default]=120)
# A word of the service's command line: a pid file whose pid now belongs to
# some other program counts as stale.
declare -A MATCH=([s3]=s3_emulator [postgis]=postgres [mapserver]=lighttpd
    [mapsync]=mapfile_sync [airflow]=airflow [redis]=redis-server [airflow-api]=airflow
    [airflow-scheduler]=airflow [airflow-dag-processor]=airflow [airflow-triggerer]=airflow
    [worker-raster]=celery [worker-default]=celery)

# ---------------------------------------------------------------- helpers ---
pid_file() { echo "$RUN_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }
defined() { declare -F "$1" >/dev/null; }

# Print the live pid of a service, or fail.
svc_pid() {
    local pid cmd
    pid="$(cat "$(pid_file "$1")" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmd" == *"${MATCH[$1]}"* ]] || return 1
    echo "$pid"
}

# Process $1 exists and is no zombie.
alive() {
    local stat
    stat="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ -n "$stat" && "$stat" != Z* ]]
}

# True while process $1 or any member of its process group lives (zombies,
# which no one may reap for a while here, don't count).
group_alive() {
    ps -eo pid=,pgid=,stat= | awk -v g="$1" '($1 == g || $2 == g) && $3 !~ /^Z/ {f = 1} END {exit !f}'
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
http_answers() { [ "$(curl -s -o /dev/null -m 3 -w '%{http_code}' "$1")" != 000 ]; }

# Run a command detached from this shell in its own session and process
# group (so stop can kill the whole group), logging to the service's log.
launch() {
    local svc=$1; shift
    echo "=== $(date -Is) start: $*" >>"$(log_file "$svc")"
    PYTHONUNBUFFERED=1 setsid nohup "$@" >>"$(log_file "$svc")" 2>&1 </dev/null &
    echo $! >"$(pid_file "$svc")"
}

fail() {
    local svc=$1; shift
    printf 'stack: %s: %s; last lines of %s:\n' "$svc" "$*" "$(log_file "$svc")" >&2
    tail -n 30 "$(log_file "$svc")" >&2 || true
    local pid
    if pid="$(cat "$(pid_file "$svc")" 2>/dev/null)"; then terminate "$svc" "$pid"; fi
    rm -f "$(pid_file "$svc")"
    exit 1
}

wait_ready() {
    local svc=$1 deadline=$((SECONDS + TIMEOUT[$1])) pid
    pid="$(cat "$(pid_file "$svc")")"
    # by pid, not svc_pid: right after the fork the child is not yet exec'd
    while :; do
        alive "$pid" || fail "$svc" "process exited"
        if "${svc}_ready" && alive "$pid"; then return 0; fi
        [ "$SECONDS" -lt "$deadline" ] || fail "$svc" "not ready after ${TIMEOUT[$svc]} s"
        sleep 1
    done
}

# A service that died leaves its pid file and maybe children (mapserv under a
# killed lighttpd): kill what is left of its process group, drop the file.
reap_stale() {
    local pf pid
    pf="$(pid_file "$1")"
    pid="$(cat "$pf" 2>/dev/null)" || return 0
    # A live process with that pid is not ours any more (svc_pid said so):
    # leave it alone. A dead leader's group can't have been reused.
    if [ -n "$pid" ] && ! alive "$pid" && group_alive "$pid"; then
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pf"
}

# Launch a service unless it runs; fails (1) when it was running.
launch_one() {
    local svc=$1 pid
    if pid="$(svc_pid "$svc")"; then
        say "$svc" "running (pid $pid)"; return 1
    fi
    reap_stale "$svc"
    local addr=${PORT[$svc]:-}
    if [ -n "$addr" ] && port_open "${addr%:*}" "${addr##*:}"; then
        die "$svc: $addr is already taken by a process this stack did not start (state dir $LS4_STATE_DIR)"
    fi
    if defined "${svc}_prepare"; then "${svc}_prepare"; fi
    "${svc}_launch" || fail "$svc" "launch failed"
}

ready_one() {
    local svc=$1
    wait_ready "$svc"
    if defined "${svc}_post"; then "${svc}_post" || fail "$svc" "post-start step failed"; fi
    say "$svc" "started (pid $(cat "$(pid_file "$svc")"), log $(log_file "$svc"))"
}

start_one() {
    if launch_one "$1"; then
        ready_one "$1"
        STARTED_HERE+=("$1")
    fi
}

# Services that need those before them but not one another: launched at once,
# then waited for (each takes seconds of Python imports before it is ready).
TOGETHER=(airflow-scheduler airflow-dag-processor airflow-triggerer worker-raster worker-default)
together() { local s; for s in "${TOGETHER[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
start_together() {
    local s launched=()
    for s in "$@"; do
        if launch_one "$s"; then launched+=("$s"); STARTED_HERE+=("$s"); fi
    done
    for s in "${launched[@]}"; do ready_one "$s"; done
}

stop_one() {
    local svc=$1 pid pf
    pf="$(pid_file "$svc")"
    if ! pid="$(svc_pid "$svc")"; then
        reap_stale "$svc"; say "$svc" "stopped"; return
    fi
    terminate "$svc" "$pid"
    rm -f "$pf"
    say "$svc" "stopped (was pid $pid)"
}

# Stop process group $2 of service $1: its own stop step or SIGTERM, then
# SIGKILL whatever is left after 30 s.
terminate() {
    local svc=$1 pid=$2 deadline=$((SECONDS + 30))
    if ! { defined "${svc}_stop" && "${svc}_stop" >/dev/null 2>&1; }; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
    while group_alive "$pid"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            sleep 1; break
        fi
        sleep 0.5
    done
}

status_one() {
    local svc=$1 pid
    if pid="$(svc_pid "$svc")"; then
        local health=ready
        "${svc}_ready" || health="NOT READY"
        say "$svc" "running (pid $pid) $health${PORT[$svc]:+ on ${PORT[$svc]}}"
    else
        say "$svc" "stopped"; return 1
    fi
}

# ----------------------------------------------------------------- s3 -------
# moto's S3 API, its buckets saved under the state dir when they change and
# when it stops (SIGTERM), and loaded when it starts.
s3_launch() {
    launch s3 "$LS4_VENV/bin/python" "$LS4_ROOT/include/s3_emulator.py" --host "$S3_HOST" --port "$S3_PORT" \
        --data "$LS4_STATE_DIR/s3/buckets.pickle"
}
s3_ready() { http_answers "$LS4_S3_ENDPOINT/"; }
s3_post() {
    "$LS4_VENV/bin/python" -c '
import json, os, boto3, botocore.exceptions
from ls4_ops.access import grants_public_read, with_public_read
from ls4_ops.events import notification_configuration, queue_arn
e = os.environ
client = dict(endpoint_url=e["LS4_S3_ENDPOINT"], region_name=e["LS4_S3_REGION"],
              aws_access_key_id=e["LS4_S3_ACCESS_KEY"], aws_secret_access_key=e["LS4_S3_SECRET_KEY"])
s3, sqs, sns = (boto3.client(service, **client) for service in ("s3", "sqs", "sns"))
bucket = e["LS4_BUCKET"]
try:
    s3.head_bucket(Bucket=bucket)
except botocore.exceptions.ClientError:
    kw = {} if e["LS4_S3_REGION"] == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": e["LS4_S3_REGION"]}}
    s3.create_bucket(Bucket=bucket, **kw)
    print("created bucket", bucket)
# The upload events (to Airflow) and mapfile events (to the mapfile sync), from
# the same emulator; its queues live in memory, so they are made at each start.
queues = [e.get("LS4_UPLOAD_QUEUE", ""), e.get("LS4_MAPFILE_QUEUE", "")]
for url in filter(None, queues):
    sqs.create_queue(QueueName=url.rstrip("/").rsplit("/", 1)[1])
arns = [queue_arn(url, e["LS4_S3_REGION"]) if url else None for url in queues]
s3.put_bucket_notification_configuration(
    Bucket=bucket, NotificationConfiguration=notification_configuration(*arns) if arns[0] else {})
print("bucket events:", ", ".join(filter(None, queues)) or "none (discovery polls the bucket)")
# Public access as AWS buckets made since April 2023 have it: ACLs disabled,
# what ls4 publishes public by the bucket policy (LS4_PUBLIC_ACCESS=acl: the
# old way, public-read on each object).
if e.get("LS4_PUBLIC_ACCESS", "policy") == "acl":
    s3.delete_bucket_ownership_controls(Bucket=bucket)
else:
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    if e.get("LS4_APPLY_BUCKET_POLICY", "").lower() in ("1", "true", "yes"):
        try:
            policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        except botocore.exceptions.ClientError:
            policy = None
        if not grants_public_read(policy, bucket):
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(with_public_read(policy, bucket)))
print("public access:", e.get("LS4_PUBLIC_ACCESS", "policy"))
# The notifications topic, and a queue of the same name subscribed to it: what
# was published can be read back locally (tests, or an operator without e-mail).
topic = e.get("LS4_SNS_TOPIC_ARN", "")
if topic:
    name = topic.rsplit(":", 1)[1]
    arn = sns.create_topic(Name=name)["TopicArn"]
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue)
    print("notifications topic:", arn, "read back from queue", url)
' >>"$(log_file s3)" 2>&1
}

# ------------------------------------------------------------ postgis -------
# A private cluster owned by the postgres OS user (initdb refuses root):
# $LS4_STATE_DIR/pg/{data,sock}. That user must traverse the path to it; where
# it can't (a clone under /root, 0700) or the socket path would be too long,
# pg is a symlink to /var/tmp/ls4-pg/<hash of the state dir> instead.
as_pg() { (cd / && runuser -u postgres -- "$@"); }

PG_LINK="$LS4_STATE_DIR/pg"
set_pg_dirs() {
    PG_HOME="$(readlink -m "$PG_LINK")"
    PG_DATA="$PG_HOME/data"
    PG_SOCK="$PG_HOME/sock"
}
set_pg_dirs

postgis_prepare() {
    chmod o+x "$LS4_STATE_DIR"
    if [ ! -e "$PG_LINK" ] && { ! as_pg test -x "$LS4_STATE_DIR" || [ ${#PG_SOCK} -gt 80 ]; }; then
        local alt
        alt="/var/tmp/ls4-pg/$(printf %s "$LS4_STATE_DIR" | md5sum | cut -c1-12)"
        rm -rf "$alt"   # a new state dir starts from scratch
        mkdir -p "$alt"
        ln -s "$alt" "$PG_LINK"
        set_pg_dirs
        echo "postgres cannot use $PG_LINK directly: cluster in $alt" >>"$(log_file postgis)"
    fi
    install -d -o postgres -g postgres -m 0755 "$PG_HOME" "$PG_SOCK"
    as_pg test -w "$PG_SOCK" || die "postgis: user postgres cannot write to $PG_SOCK"
    if [ ! -s "$PG_DATA/PG_VERSION" ]; then
        install -d -o postgres -g postgres -m 0700 "$PG_DATA"
        as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth-local=peer --auth-host=scram-sha-256 >>"$(log_file postgis)" 2>&1 \
            || fail postgis "initdb failed"
    fi
}

# pg_ctl without -l: the server logs to pg_ctl's stdout, a file that root
# opened here, so the log can stay in $LOG_DIR whoever may traverse it.
postgis_launch() {
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -t "${TIMEOUT[postgis]}" \
        -o "-c listen_addresses='$LS4_PG_HOST' -c port=$LS4_PG_PORT -c unix_socket_directories='$PG_SOCK'" \
        start >>"$(log_file postgis)" 2>&1 </dev/null || return 1
    head -n 1 "$PG_DATA/postmaster.pid" >"$(pid_file postgis)"
}

postgis_ready() { "$PG_BIN/pg_isready" -q -h "$LS4_PG_HOST" -p "$LS4_PG_PORT"; }

# Role, database and extension; idempotent, and keeps the password in step
# with LS4_PG_PASSWORD.
postgis_post() {
    as_pg "$PG_BIN/psql" -h "$PG_SOCK" -p "$LS4_PG_PORT" -d postgres -qAt -v ON_ERROR_STOP=1 \
        -v user="$LS4_PG_USER" -v pw="$LS4_PG_PASSWORD" -v db="$LS4_PG_DB" \
        >>"$(log_file postgis)" 2>&1 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'user', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
\connect :"db"
CREATE EXTENSION IF NOT EXISTS postgis;
SQL
}

postgis_stop() { as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null; }

# ---------------------------------------------------------- mapserver -------
# lighttpd on 127.0.0.1:$LS4_WMS_PORT runs mapserv over FastCGI at /wms/.
# Public URLs name a mapfile as map=/mapfiles/NAME.map (the original system
# had the bucket mounted at /mapfiles); lighttpd rewrites that to
# $LS4_MAPFILE_DIR/NAME.map, the only paths MS_MAP_PATTERN lets through.
# It also serves the collections' preview pages at /preview/NAME.html (the
# sync puts them beside the mapfiles) and the Leaflet they load at
# /vendor/leaflet/ (install.sh vendors it into the venv).
#
# Started as root, lighttpd drops to $MS_USER, who must reach all of that.
# Where it can't (a clone under /root, 0700), MapServer's files live in
# /var/tmp/ls4-mapserver/<hash of the state dir> instead and
# $LS4_STATE_DIR/mapserver is a symlink to it, as PostGIS does with pg/:
# everything there is made again at start (the sync fetches the mapfiles).
LEAFLET_DIR="$LS4_VENV/vendor/leaflet"
# shellcheck disable=SC2001
regex_quote() { sed 's/[][\.^$*+?(){}|]/\\&/g' <<<"$1"; }

set_ms_dirs() {
    MS_DIR="$(readlink -m "$MS_LINK")"
    MAPFILE_DIR="$(readlink -m "$LS4_MAPFILE_DIR")"
    MS_LOG="$(log_file mapserver)"
    if [ -L "$MS_LINK" ]; then MS_LOG="$MS_DIR/mapserver.log"; fi
}
set_ms_dirs

ms_user_reaches() { (cd / && runuser -u "$MS_USER" -- test -x "$1"); }

relocate_mapserver() {
    local alt parent=/var/tmp/ls4-mapserver
    # Root writes configuration there that lighttpd runs: the folder must be root's alone.
    install -d -m 0755 "$parent"
    [ "$(stat -c '%u %a' "$parent")" = "0 755" ] && [ ! -L "$parent" ] \
        || die "mapserver: $parent is not root's alone (owner/mode $(stat -c '%U %a' "$parent")): remove it"
    alt="$parent/$(printf %s "$LS4_STATE_DIR" | md5sum | cut -c1-12)"
    if [ ! -L "$MS_LINK" ]; then
        rm -rf "$MS_LINK" "$alt"
        ln -s "$alt" "$MS_LINK"
        echo "$MS_USER cannot reach $LS4_STATE_DIR: MapServer's files in $alt" >>"$(log_file mapserver)"
    fi
    install -d -m 0755 "$alt"
    set_ms_dirs
    # The stack's log folder keeps the name: it leads to the log lighttpd can open.
    touch "$MS_LOG"
    ln -sfn "$MS_LOG" "$(log_file mapserver)"
}

mapserver_prepare() {
    local d owner=""
    [ "$(id -u)" = 0 ] && owner="$MS_USER"
    chmod o+x "$LS4_STATE_DIR"
    if [ -n "$owner" ] && { [ -L "$MS_LINK" ] || ! ms_user_reaches "$LS4_STATE_DIR"; }; then
        relocate_mapserver
    fi
    mkdir -p "$LS4_MAPFILE_DIR" "$MS_DIR/www" "$MS_DIR/sock" "$MS_DIR/tmp"
    set_ms_dirs
    if [ -n "$owner" ] && ! ms_user_reaches "$MAPFILE_DIR"; then
        die "mapserver: user $MS_USER cannot reach LS4_MAPFILE_DIR=$LS4_MAPFILE_DIR: choose a folder it can"
    fi
    for d in "$MAPFILE_DIR" "$MS_DIR"; do
        [[ "$d" =~ ^[A-Za-z0-9_./-]+$ ]] || die "mapserver: unsupported characters in path $d"
    done
    [ -s "$LEAFLET_DIR/dist/leaflet.js" ] || die "mapserver: no Leaflet in $LEAFLET_DIR: run include/stack/install.sh"
    # A copy beside the configuration: the venv may be out of $MS_USER's reach too.
    rm -rf "$MS_DIR/leaflet"
    cp -r "$LEAFLET_DIR/dist" "$MS_DIR/leaflet"
    # The GetFeatureInfo text/html templates, which mapfiles name relative to
    # themselves; in a folder of their own, where the sync (top-level files
    # only) and /preview/ do not reach.
    install -d "$MAPFILE_DIR/templates"
    install -m 0644 "$LS4_ROOT"/include/mapserver/*.html "$MAPFILE_DIR/templates/"
    write_mapserver_conf
    write_pg_service
    write_lighttpd_conf "$owner"
    touch "$MS_LOG"
    if [ -n "$owner" ]; then
        # lighttpd opens its error log after dropping privileges
        chown "$owner:" "$MS_DIR/pg_service.conf" "$MS_LOG" "$MS_DIR/sock" "$MS_DIR/tmp"
        chgrp "$owner" "$MS_DIR/mapserver.conf"
    fi
    lighttpd -tt -f "$MS_DIR/lighttpd.conf" >>"$MS_LOG" 2>&1 \
        || fail mapserver "lighttpd rejects $MS_DIR/lighttpd.conf"
}

write_mapserver_conf() {
    cat >"$MS_DIR/mapserver.conf" <<EOF
# Generated by include/stack/stack.sh; edits are lost on the next start.
CONFIG
  ENV
    MS_MAP_PATTERN "^$(regex_quote "${MAPFILE_DIR%/}")/[a-z0-9_]+\\.map\$"
    # stderr reaches lighttpd's error log at once; a file would sit in a
    # 4 KB stdio buffer of a long-lived FastCGI process.
    MS_ERRORFILE "stderr"
    # libpq ignores this one: lighttpd.conf passes it with each request
    PGSERVICEFILE "$MS_DIR/pg_service.conf"
    # COGs are read by their public URLs (/vsicurl/): no S3 key on this host.
    GDAL_DISABLE_READDIR_ON_OPEN "EMPTY_DIR"
    CPL_VSIL_CURL_ALLOWED_EXTENSIONS ".tif"
  END
END
EOF
    chmod 0640 "$MS_DIR/mapserver.conf"
}

# The database secret lives here, on the MapServer host, never in a mapfile:
# mapfiles say CONNECTION "service=$LS4_PG_SERVICE".
write_pg_service() {
    local f="$MS_DIR/pg_service.conf"
    (umask 077 && cat >"$f" <<EOF
[$LS4_PG_SERVICE]
host=$LS4_PG_HOST
port=$LS4_PG_PORT
dbname=$LS4_PG_DB
user=$LS4_PG_USER
password=$LS4_PG_PASSWORD
EOF
    )
    chmod 0600 "$f"
}

write_lighttpd_conf() {
    local owner=$1 user_lines=""
    [ -z "$owner" ] || user_lines="server.username = \"$owner\"
server.groupname = \"$owner\""
    cat >"$MS_DIR/lighttpd.conf" <<EOF
# Generated by include/stack/stack.sh; edits are lost on the next start.
server.modules = ( "mod_access", "mod_alias", "mod_rewrite", "mod_setenv", "mod_fastcgi" )
server.bind = "127.0.0.1"
server.port = $LS4_WMS_PORT
server.document-root = "$MS_DIR/www"
server.pid-file = "$MS_DIR/lighttpd.pid"
server.errorlog = "$MS_LOG"
server.upload-dirs = ( "$MS_DIR/tmp" )
$user_lines

# /wms?... and /wms/?... with map=/mapfiles/NAME.map (also %2F-encoded, any
# case of "map") -> map=$MAPFILE_DIR/NAME.map
url.rewrite-once = (
  "^/wms/?\?(.*&)?((?i)map)=(?:/|%2[Ff])mapfiles(?:/|%2[Ff])([a-z0-9_]+)\.map(&.*)?\$"
    => "/wms/?\$1\$2=$MAPFILE_DIR/\$3.map\$4",
  "^/wms(\?.*)?\$" => "/wms/\$1",
)

# Preview pages: only NAME.html under /preview/, never a mapfile or a template.
alias.url = ( "/preview/" => "$MAPFILE_DIR/", "/vendor/leaflet/" => "$MS_DIR/leaflet/" )
\$HTTP["url"] =~ "^/preview/" {
  \$HTTP["url"] !~ "^/preview/[a-z0-9_]+\\.html\$" { url.access-deny = ( "" ) }
}
mimetype.assign = ( ".html" => "text/html; charset=utf-8", ".css" => "text/css; charset=utf-8",
                    ".js" => "text/javascript; charset=utf-8", ".png" => "image/png" )

# libpq reads PGSERVICEFILE with getenv(), and under FastCGI a request's
# environment is the request's parameters (libfcgi swaps environ): neither
# the config file's ENV block nor bin-environment reaches it, this does.
setenv.add-environment = ( "PGSERVICEFILE" => "$MS_DIR/pg_service.conf" )

fastcgi.server = ( "/wms/" => ( (
  "socket" => "$MS_DIR/sock/mapserv.sock",
  "bin-path" => "$MAPSERV",
  "check-local" => "disable",
  "max-procs" => 2,
  "bin-environment" => ( "MAPSERVER_CONFIG_FILE" => "$MS_DIR/mapserver.conf" ),
  # only these from lighttpd's environment: keeps the stack's secrets out
  "bin-copy-environment" => ( "PATH", "LANG", "TZ" ),
) ) )
EOF
}

mapserver_launch() { launch mapserver lighttpd -D -f "$MS_DIR/lighttpd.conf"; }
mapserver_ready() { http_answers "http://127.0.0.1:$LS4_WMS_PORT/"; }

# ------------------------------------------------------------ mapsync -------
# Copies mapfiles/*.map from the bucket into $LS4_MAPFILE_DIR every couple of
# seconds (MapServer cannot open a mapfile from /vsis3/).
mapsync_prepare() { mkdir -p "$LS4_MAPFILE_DIR"; }
mapsync_launch() {
    launch mapsync "$LS4_VENV/bin/python" -m ls4_ops.mapfile_sync --dest "$LS4_MAPFILE_DIR"
}
mapsync_ready() {
    local pid
    pid="$(cat "$(pid_file mapsync)")" || return 1
    [ "$(ps -o etimes= -p "$pid" 2>/dev/null || echo 0)" -ge 2 ]
}

# ------------------------------------------------------------ airflow -------
AIRFLOW_STAMP="$AIRFLOW_HOME/.ls4-migrated"

airflow_prepare() {
    mkdir -p "$AIRFLOW_HOME"
    local version
    version="$("$LS4_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("apache-airflow"))')"
    if [ "$(cat "$AIRFLOW_STAMP" 2>/dev/null)" != "$version" ] || [ ! -e "$AIRFLOW_HOME/airflow.db" ]; then
        echo "=== $(date -Is) airflow db migrate" >>"$(log_file airflow)"
        "$LS4_VENV/bin/airflow" db migrate >>"$(log_file airflow)" 2>&1 \
            || fail airflow "airflow db migrate failed"
        echo "$version" >"$AIRFLOW_STAMP"
    fi
    set_pools airflow
}

# The pools that cap S3 and PostGIS use (names and sizes: ls4_ops/settings.py).
set_pools() {
    local file="$AIRFLOW_HOME/ls4-pools.json"
    "$LS4_VENV/bin/python" -c '
import json, sys
from ls4_ops.settings import Settings
json.dump({name: {"slots": slots, "description": "ls4: tasks that use " + what, "include_deferred": False}
           for name, (slots, what) in Settings.from_env().pools.items()}, sys.stdout)' >"$file" \
        && "$LS4_VENV/bin/airflow" pools import "$file" >>"$(log_file "$1")" 2>&1 \
        || fail "$1" "could not set the pools of $file"
}

# standalone runs `airflow <component>` from PATH: the venv goes first.
airflow_launch() {
    launch airflow env PATH="$LS4_VENV/bin:$PATH" "$LS4_VENV/bin/airflow" standalone
}

airflow_ready() {
    curl -s -m 5 "http://127.0.0.1:$LS4_AIRFLOW_PORT/api/v2/monitor/health" 2>/dev/null \
        | "$LS4_VENV/bin/python" -c '
import json, sys
try:
    h = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
sys.exit(0 if (h.get("scheduler") or {}).get("status") == "healthy" else 1)'
}

# ---------------------------------------------------- celery (scaled out) ---
# LS4_EXECUTOR=celery: the deployment of several hosts, on this one. Redis is
# the broker; Airflow's metadata is database $LS4_AIRFLOW_DB of the PostGIS
# cluster; each Airflow component is a process (a service) of its own.

# redis-server on loopback, its data (an append-only file) in the state dir.
redis_prepare() { mkdir -p "$LS4_STATE_DIR/redis"; }
redis_launch() {
    launch redis redis-server --bind 127.0.0.1 --port "$LS4_REDIS_PORT" --dir "$LS4_STATE_DIR/redis" \
        --appendonly yes --save "" --protected-mode yes --daemonize no
}
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p "$LS4_REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
redis_stop() { redis-cli -h 127.0.0.1 -p "$LS4_REDIS_PORT" shutdown >/dev/null 2>&1; }

# The metadata database (owned by the ls4 role), migrated, and the pools.
airflow-api_prepare() {
    mkdir -p "$AIRFLOW_HOME"
    postgis_ready || fail airflow-api "PostgreSQL at $LS4_PG_HOST:$LS4_PG_PORT does not answer: start postgis"
    as_pg "$PG_BIN/psql" -h "$PG_SOCK" -p "$LS4_PG_PORT" -d postgres -qAt -v ON_ERROR_STOP=1 \
        -v user="$LS4_PG_USER" -v db="$LS4_AIRFLOW_DB" >>"$(log_file airflow-api)" 2>&1 <<'SQL' \
        || fail airflow-api "could not create database $LS4_AIRFLOW_DB"
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
    echo "=== $(date -Is) airflow db migrate" >>"$(log_file airflow-api)"
    "$LS4_VENV/bin/airflow" db migrate >>"$(log_file airflow-api)" 2>&1 || fail airflow-api "airflow db migrate failed"
    set_pools airflow-api
}

airflow_component() {
    local svc=$1; shift
    launch "$svc" env PATH="$LS4_VENV/bin:$PATH" "$LS4_VENV/bin/airflow" "$@"
}
airflow-api_launch() { airflow_component airflow-api api-server --host "$AIRFLOW__API__HOST" --port "$LS4_AIRFLOW_PORT"; }
airflow-scheduler_launch() { airflow_component airflow-scheduler scheduler; }
airflow-dag-processor_launch() { airflow_component airflow-dag-processor dag-processor; }
airflow-triggerer_launch() { airflow_component airflow-triggerer triggerer; }

# What the API server says of a component ("" while it does not answer).
component_status() {
    curl -s -m 5 "http://127.0.0.1:$LS4_AIRFLOW_PORT/api/v2/monitor/health" 2>/dev/null \
        | "$LS4_VENV/bin/python" -c '
import json, sys
try:
    print((json.load(sys.stdin).get(sys.argv[1]) or {}).get("status") or "")
except ValueError:
    pass' "$1"
}
airflow-api_ready() { [ -n "$(component_status metadatabase)" ]; }
airflow-scheduler_ready() { [ "$(component_status scheduler)" = healthy ]; }
airflow-dag-processor_ready() { [ "$(component_status dag_processor)" = healthy ]; }
airflow-triggerer_ready() { [ "$(component_status triggerer)" = healthy ]; }

# A Celery worker in a folder of its own ($LS4_STATE_DIR/workers/NAME: its
# working directory, scratch folder and copy of the registry), as on a host of
# its own; its log server on a port of its own.
worker_launch() {
    local svc=$1 queues=$2 concurrency=$3 log_port=$4 home="$LS4_STATE_DIR/workers/${1#worker-}"
    mkdir -p "$home/scratch"
    (cd "$home" && export LS4_SCRATCH_DIR="$home/scratch" LS4_REGISTRY="$home/registry.json" \
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$log_port" \
        && airflow_component "$svc" celery worker --celery-hostname "${svc#worker-}@%h" \
        --queues "$queues" --concurrency "$concurrency")
}
worker-raster_launch() {
    worker_launch worker-raster "$LS4_RASTER_QUEUE" "$LS4_RASTER_CONCURRENCY" "$AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"
}
worker-default_launch() {
    worker_launch worker-default default "$LS4_DEFAULT_CONCURRENCY" "$((AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT + 2))"
}
# Celery says "<name>@<host> ready." once it takes tasks.
worker_ready() {
    awk -v ready="${1#worker-}@.* ready\\." '/^=== .* start: / {up = 0} $0 ~ ready {up = 1} END {exit !up}' \
        "$(log_file "$1")"
}
worker-raster_ready() { worker_ready worker-raster; }
worker-default_ready() { worker_ready worker-default; }

# --------------------------------------------------------------- main -------
known() { local s; for s in "${SERVICES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

# A start that fails stops the services it started itself (not those that
# were running already): nothing is left holding ports for the next try.
STARTED_HERE=()
undo_start() {
    local rc=$?
    set +e
    if [ "$rc" -ne 0 ] && [ ${#STARTED_HERE[@]} -gt 0 ]; then
        printf 'stack: start failed; stopping what it started: %s\n' "${STARTED_HERE[*]}" >&2
        stop_all "${STARTED_HERE[@]}" >&2
    fi
    exit "$rc"
}

start_all() {
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    trap undo_start EXIT
    in_order start_together start_one "$@"
    trap - EXIT
}
stop_all() {
    local i reversed=()
    for ((i = $#; i >= 1; i--)); do reversed+=("${!i}"); done
    in_order stop_together stop_one "${reversed[@]}"
}
# in_order GROUP_FN ONE_FN SERVICE...: each run of services that start and stop
# together goes to GROUP_FN at once, every other service to ONE_FN, in order.
in_order() {
    local group_fn=$1 one_fn=$2 s group=()
    shift 2
    for s in "$@"; do
        if together "$s"; then group+=("$s"); continue; fi
        "$group_fn" "${group[@]}"
        group=()
        "$one_fn" "$s"
    done
    "$group_fn" "${group[@]}"
}
stop_together() {
    local s stopping=()
    for s in "$@"; do stop_one "$s" & stopping+=($!); done
    [ ${#stopping[@]} -eq 0 ] || wait "${stopping[@]}"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    local s rc=0 svcs=() named=()
    # With Celery, "airflow" names all of Airflow's components.
    for s in "$@"; do
        if [ "$s" = airflow ] && [ "$LS4_EXECUTOR" = celery ]; then named+=("${CELERY_AIRFLOW[@]}"); else named+=("$s"); fi
    done
    set -- "${named[@]}"
    for s in "$@"; do known "$s" || die "unknown service '$s' (known: ${SERVICES[*]})"; done
    # always in dependency order, whatever order they were named in
    for s in "${SERVICES[@]}"; do
        if [ $# -eq 0 ] || [[ " $* " == *" $s "* ]]; then svcs+=("$s"); fi
    done
    case "$cmd" in
        start) start_all "${svcs[@]}" ;;
        stop) stop_all "${svcs[@]}" ;;
        restart) stop_all "${svcs[@]}" && start_all "${svcs[@]}" ;;
        status) for s in "${svcs[@]}"; do status_one "$s" || rc=3; done; return $rc ;;
        *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
