#!/usr/bin/env bash
# Bytes at rest per webhook on the embedded store: 1 KiB signed Tight
# webhooks for $SECONDS_PER_RUN s at 32 connections, on the full path (the
# example rule and the file action, every action line written) and ingest
# only (no rules), then a clean stop (the WAL folded into the database).
# Prints, per webhook, the journal's bytes, SQLite's (database, WAL) and
# both together, and (with Debian's sqlite3) SQLite's bytes per webhook by
# table and index, from its dbstat table. KEEP=1 keeps the runs' folders.
# Everything on 127.0.0.1; every wait bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
SECRET=bench-secret-0123456789abcdefghijklmnop
PORT=18094

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-file -p switchyard-bench
root=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept: $root" >&2; else rm -rf "$root"; fi
}
trap cleanup EXIT

. bench/lib.sh
for mode in full ingest; do
  # lib.sh's helpers work in $work.
  work="$root/$mode"
  setup_full_path
  mkdir -p "$work/data" "$work/no-rules"
  rules=rules; [ "$mode" = ingest ] && rules=no-rules
  config $PORT data $rules > "$work/switchyard.toml"
  BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$work/switchyard.toml" 2>"$work/log" &
  pid=$!
  wait_port $PORT
  ok=$(target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" --label "$mode" \
         --url "http://127.0.0.1:$PORT/hooks/tight" --signing tight --connections 32 |
       python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
  [ "$mode" = full ] && drained "$ok"
  kill -TERM "$pid"; wait "$pid" || true; pid=
  journal=$(du -sb "$work/data/journal" | cut -f1)
  sqlite=$(cat "$work"/data/switchyard.db* | wc -c)
  python3 -c "ok, j, d = $ok, $journal, $sqlite
print(f'$mode: {ok} webhooks; per webhook: journal {j/ok:.0f} B, SQLite {d/ok:.0f} B, together {(j+d)/ok:.0f} B')"
  if command -v sqlite3 >/dev/null; then
    sqlite3 "$work/data/switchyard.db" "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 12" |
      python3 -c "import sys
for line in sys.stdin:
    name, size = line.rstrip().rsplit('|', 1)
    print(f'  {name:<32} {int(size) / $ok:>7.0f} B per webhook')"
  fi
done
