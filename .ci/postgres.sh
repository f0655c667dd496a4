#!/usr/bin/env bash
# Start a throwaway PostgreSQL server (Debian's package) for the search tests; prints the URL to use.
# Usage: eval "$(.ci/postgres.sh start)"   ...   .ci/postgres.sh stop
set -euo pipefail
DIR=/tmp/cnnlab-postgres
PORT=55432
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
case "${1:-start}" in
start)
  if [ -z "$BIN" ]; then
    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
    BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  rm -rf "$DIR" && mkdir -p "$DIR" && chown postgres "$DIR"
  runuser -u postgres -- "$BIN/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -o "-p $PORT -k $DIR -c listen_addresses=localhost" \
    -l "$DIR/log" -w start >/dev/null
  runuser -u postgres -- "$BIN/createdb" -h localhost -p "$PORT" -U postgres cnnlab
  echo "export CNNLAB_TEST_POSTGRES=postgresql://postgres@localhost:$PORT/cnnlab"
  ;;
stop)
  [ -d "$DIR/data" ] && runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null || true
  ;;
esac
