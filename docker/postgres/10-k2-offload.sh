#!/bin/sh
# prefect-db first start: a second database and user for the offload state (watermarks, audit log).
# Runs once, from /docker-entrypoint-initdb.d, as the postgres superuser.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$K2_OFFLOAD_DB_PASSWORD" <<'SQL'
CREATE ROLE k2_offload LOGIN PASSWORD :'pw';
CREATE DATABASE k2_offload OWNER k2_offload;
SQL
