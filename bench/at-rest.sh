#!/usr/bin/env bash
# Bytes at rest per webhook on the embedded store: 1 KiB signed Tight
# webhooks for $SECONDS_PER_RUN s at 32 connections, on the full path (the
# example rule and the file action, every action line written) and ingest
# only (no rules), then a clean stop (the WAL folded into the database).
# Prints, per webhook, the journal's bytes, SQLite's (database, WAL) and
# both together. Everything on 127.0.0.1; every wait bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
SECRET=bench-secret-0123456789abcdefghijklmnop
PORT=18094

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-file -p switchyard-bench
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for mode in full ingest; do
  dir="$work/$mode"
  mkdir -p "$dir/plugins" "$dir/rules" "$dir/data"
  cp target/release/libswitchyard_tight.so target/release/libswitchyard_file.so "$dir/plugins/"
  [ "$mode" = full ] && cp rules/invoice-viewed.rhai "$dir/rules/"
  cat > "$dir/switchyard.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "data"
plugin_dir = "plugins"
rules_dir = "rules"
[sources.tight]
plugin = "tight"
secret = { env = "BENCH_SECRET" }
[actions.notify-owner]
plugin = "file"
path = "$dir/actions.jsonl"
TOML
  BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$dir/switchyard.toml" 2>"$dir/log" &
  pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  ok=$(target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" --label "$mode" \
         --url "http://127.0.0.1:$PORT/hooks/tight" --signing tight --connections 32 |
       python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
  if [ "$mode" = full ]; then
    for _ in $(seq 1 300); do
      [ "$(cat "$dir/actions.jsonl" 2>/dev/null | wc -l)" -ge "$ok" ] && break
      sleep 0.1
    done
  fi
  kill -TERM "$pid"; wait "$pid" || true; pid=
  journal=$(du -sb "$dir/data/journal" | cut -f1)
  sqlite=$(cat "$dir"/data/switchyard.db* | wc -c)
  python3 -c "ok, j, d = $ok, $journal, $sqlite
print(f'$mode: {ok} webhooks; per webhook: journal {j/ok:.0f} B, SQLite {d/ok:.0f} B, together {(j+d)/ok:.0f} B')"
done
