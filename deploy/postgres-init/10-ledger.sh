#!/bin/sh
# First start of the PostgreSQL container only (docker-entrypoint-initdb.d): the routers' shared
# budget ledger gets its own user and database beside MLflow's. The routers create the tables.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE USER ledger WITH PASSWORD '${LEDGER_DB_PASSWORD}';
CREATE DATABASE ledger OWNER ledger;
SQL
