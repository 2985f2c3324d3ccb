#!/usr/bin/env bash
# Starts a local PostgreSQL (Debian's package) for the platform storage tests.
# Prints one line on stdout, `export FIREBOX_TEST_POSTGRES_URL=...`, so CI can run
#   eval "$(scripts/ci_postgres.sh)"
# Everything else goes to stderr. Idempotent: re-running reuses the running cluster and database.
set -euo pipefail
DB_NAME=${FIREBOX_PG_DB:-firebox_test}
DB_USER=${FIREBOX_PG_USER:-firebox}
DB_PASSWORD=${FIREBOX_PG_PASSWORD:-firebox}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { echo "ci_postgres: $*" >&2; }

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  log "installing postgresql"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
    || { $SUDO apt-get update -q >&2 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
fi

cluster=$(pg_lsclusters -h | head -n 1)
if [ -z "$cluster" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  log "creating cluster $version/main"
  $SUDO pg_createcluster "$version" main >&2
  cluster=$(pg_lsclusters -h | head -n 1)
fi
read -r version name port status _ <<<"$cluster"
if [ "$status" != "online" ]; then
  log "starting cluster $version/$name on port $port"
  $SUDO pg_ctlcluster "$version" "$name" start >&2
fi

if command -v runuser >/dev/null 2>&1; then
  as_postgres() { $SUDO runuser -u postgres -- "$@"; }
else
  as_postgres() { $SUDO su postgres -c "$(printf '%q ' "$@")"; }
fi
psql_admin() { as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }

for _ in $(seq 1 30); do psql_admin -c "select 1" >/dev/null 2>&1 && break; sleep 1; done
if [ "$(psql_admin -c "select 1 from pg_roles where rolname = '$DB_USER'")" != "1" ]; then
  log "creating role $DB_USER"
  psql_admin -c "create role $DB_USER login password '$DB_PASSWORD'" >&2
fi
if [ "$(psql_admin -c "select 1 from pg_database where datname = '$DB_NAME'")" != "1" ]; then
  log "creating database $DB_NAME"
  psql_admin -c "create database $DB_NAME owner $DB_USER" >&2
fi

url="postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$port/$DB_NAME"
log "ready: $url"
echo "export FIREBOX_TEST_POSTGRES_URL=$url"
