#!/bin/bash
# Run once by the PostgreSQL image's entrypoint, when it creates the cluster
# (/docker-entrypoint-initdb.d): Airflow's metadata database and ls4's PostGIS database,
# each owned by a role of its own. Passwords changed in .env later must be changed in
# the database too (ALTER ROLE ... PASSWORD), as the cluster is not created again.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v airflow_password="$AIRFLOW_DB_PASSWORD" \
    -v ls4_user="$LS4_PG_USER" -v ls4_password="$LS4_PG_PASSWORD" -v ls4_db="$LS4_PG_DB" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'ls4_user', :'ls4_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'ls4_db', :'ls4_user') \gexec
\connect :"ls4_db"
CREATE EXTENSION IF NOT EXISTS postgis;
SQL
