#!/usr/bin/env bash
# Retention soak: a daemon with a short retention under a steady load, so
# that the pruner runs all along beside ingest. A generic HMAC source, a
# rule that wants every event, the file action; $CONNECTIONS keep-alive
# connections sending distinct signed 1 KiB webhooks back to back for
# $SLICES slices of $SLICE_SECONDS s. One JSON line per slice (webhooks
# answered 2xx and otherwise, req/s, the store's size on disk, the longest
# group commit), then a summary: the first slice's req/s, the lowest after
# it and their ratio, the largest store, the longest commit. With a
# retention of $RETENTION the store's size should level off once pruning
# starts, and the rate should hold.
#
# STORE=postgres runs the same on the PostgreSQL store named by
# SWITCHYARD_BENCH_POSTGRES (a postgres:// URL of an empty database); the
# database's size is read with psql beside each slice (the group-commit
# histogram is the embedded store's: its column is null there).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-4}
SLICES=${SLICES:-12}
SLICE_SECONDS=${SLICE_SECONDS:-10}
RETENTION=${RETENTION:-20s}
STORE=${STORE:-embedded}
PORT=${PORT:-18090}
SECRET=bench-secret-0123456789abcdefghijklmnop

cargo build --release -q -p switchyard -p switchyard-webhook -p switchyard-file -p switchyard-bench

work=$(mktemp -d)
pid=
cleanup() {
  # A daemon stuck in a statement does not stop on SIGTERM: give it 10 s.
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; kill -9 "$pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true; [ -n "${KEEP_LOG:-}" ] && cp "$work/switchyard.log" "$KEEP_LOG"; rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/plugins" "$work/rules" "$work/data"
cp target/release/libswitchyard_webhook.so target/release/libswitchyard_file.so "$work/plugins/"
cat > "$work/rules/all.rhai" <<'RHAI'
const EVENTS = ["webhook.*"];
action("record", #{ id: event.id, type: event.type });
RHAI
store_url=""
if [ "$STORE" = postgres ]; then
  store_url="url = \"${SWITCHYARD_BENCH_POSTGRES:?set SWITCHYARD_BENCH_POSTGRES to an empty database}\""
fi
cat > "$work/switchyard.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$work/data"
plugin_dir = "$work/plugins"
rules_dir = "$work/rules"
[store]
retention = "$RETENTION"
$store_url
[sources.partner]
plugin = "webhook"
verify = "hmac"
secret = { env = "BENCH_SECRET" }
signature_header = "X-Signature"
signature_prefix = "sha256="
event_type = "/type"
[actions.record]
plugin = "file"
path = "$work/actions.jsonl"
TOML

BENCH_SECRET=$SECRET SWITCHYARD_LOG=${SWITCHYARD_LOG:-info} target/release/switchyard run --config "$work/switchyard.toml" 2>"$work/switchyard.log" &
pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
# Another process on the port would be measured instead: the daemon must be up.
kill -0 "$pid" 2>/dev/null || { echo "the daemon did not start:" >&2; cat "$work/switchyard.log" >&2; exit 1; }

# The shared store's size is the database's, not the data dir's: read it
# beside each slice (psql, bounded to the run's slices).
if [ "$STORE" = postgres ]; then
  ( for i in $(seq 1 "$SLICES"); do
      sleep "$SLICE_SECONDS"
      echo "{\"slice\":$i,\"database_mib\":$(psql "$SWITCHYARD_BENCH_POSTGRES" -Atc \
        "SELECT round(pg_database_size(current_database()) / 1048576.0, 1)" 2>/dev/null || echo null)}"
    done > "$work/db-sizes" ) &
  sizes=$!
fi

target/release/switchyard-bench soak --url "http://127.0.0.1:$PORT/hooks/partner" \
  --metrics "http://127.0.0.1:$PORT/metrics" --data-dir "$work/data" --secret "$SECRET" \
  --connections "$CONNECTIONS" --slices "$SLICES" --slice-seconds "$SLICE_SECONDS"
if [ "$STORE" = postgres ]; then
  wait "$sizes"
  cat "$work/db-sizes"
  echo "events kept at the end: $(psql "$SWITCHYARD_BENCH_POSTGRES" -Atc 'SELECT count(*) FROM events')"
fi
echo "prune rounds that removed something: $(grep -c ' pruned' "$work/switchyard.log" || true)"
echo "warnings and errors in the daemon's log, by kind:"
grep -E ' (WARN|ERROR) ' "$work/switchyard.log" | sed -E 's/^[^ ]+ +//; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -20 || true
