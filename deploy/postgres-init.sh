#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume: creates the API's
# own login role. Its grants (read counters and history, write keys and catalog, no DDL) are
# given by `interaction-summary migrate --api-role interaction_summary_api` (the migrate service).
set -eu
psql -v ON_ERROR_STOP=1 -v api_password="$API_DB_PASSWORD" \
     --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE interaction_summary_api LOGIN PASSWORD :'api_password';
SQL
