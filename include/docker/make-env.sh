#!/bin/sh
# Writes .env for docker-compose.yaml: fresh secrets, and the address at which users and
# the containers reach this host (PUBLIC_HOST). Run it once, from the repository root;
# an existing .env is left alone (delete it for new secrets: the databases and MinIO keep
# the old ones, see docs/deploying.md).
set -eu
cd "$(dirname "$0")/../.."
if [ -e .env ]; then
    echo "make-env: .env exists, left as it is" >&2
    exit 0
fi

# Hex: safe in the URLs and JSON the compose file builds from them.
secret() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# Fernet wants 32 random bytes in URL-safe base64.
fernet_key() { head -c 32 /dev/urandom | base64 | tr '+/' '-_'; }
# The first address of this host: its browsers and its containers both reach it.
host_address() { hostname -I 2>/dev/null | awk '{print $1}'; }

umask 077
cat >.env <<ENV
# Made by include/docker/make-env.sh; never commit it.
PUBLIC_HOST=${PUBLIC_HOST:-$(host_address)}
AIRFLOW__CORE__FERNET_KEY=$(fernet_key)
AIRFLOW__API_AUTH__JWT_SECRET=$(secret)
AIRFLOW__API__SECRET_KEY=$(secret)
AIRFLOW_DB_PASSWORD=$(secret)
POSTGRES_PASSWORD=$(secret)
LS4_PG_PASSWORD=$(secret)
MINIO_ROOT_PASSWORD=$(secret)
LS4_S3_SECRET_KEY=$(secret)
LS4_AIRFLOW_PASSWORD=$(secret)
ENV
public_host="$(sed -n 's/^PUBLIC_HOST=//p' .env)"
if [ -z "$public_host" ]; then
    echo "make-env: wrote .env; set PUBLIC_HOST in it to this host's address (users and containers reach it there)" >&2
else
    echo "make-env: wrote .env (PUBLIC_HOST=$public_host: set it to this host's name if users reach it by another)"
fi
