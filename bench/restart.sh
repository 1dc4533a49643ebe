#!/usr/bin/env bash
# Restart benchmark: what `systemctl restart switchyard` costs a provider.
# Signed Tight webhooks at a steady rate (RATE, default 200/s), each on a new
# connection, for SECONDS_PER_RUN s (default 12) while the daemon is stopped
# with SIGTERM and started again RESTARTS times (default 3): once with the
# daemon binding `listen` itself (started by hand, or a unit without
# switchyard.socket) and once on a socket held across the restarts and
# passed as systemd passes switchyard.socket. Durable defaults, the example
# rule and the file action; each run's events are counted in the action's
# file at the end (every accepted webhook routed once).
# Prints one JSON line per run, then a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-200} SECONDS_PER_RUN=${SECONDS_PER_RUN:-12} RESTARTS=${RESTARTS:-3}
SECRET=bench-secret-0123456789abcdefghijklmnop
SY_PORT=18095

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-file -p switchyard-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. bench/lib.sh
setup_full_path
config $SY_PORT data rules > "$work/switchyard.toml"

one_run() {
  rm -rf "$work/data"; mkdir -p "$work/data"
  BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard-bench restart \
      --daemon target/release/switchyard --config "$work/switchyard.toml" \
      --listen "127.0.0.1:$SY_PORT" --secret "$SECRET" --rate "$RATE" \
      --seconds "$SECONDS_PER_RUN" --restarts "$RESTARTS" "$@" 2>>"$work/switchyard.log" > "$work/line"
  # Every accepted webhook's action line, once: a daemon routes what the
  # last stop left pending; wait for the lines (at most 30 s).
  ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/line")
  BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$work/switchyard.toml" 2>>"$work/switchyard.log" &
  local pid=$!
  drained "$ok"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  routed=$(python3 -c 'import json,sys; print(len({json.loads(l)["params"]["invoice"] for l in open(sys.argv[1])}))' "$work/data/notify-owner.jsonl" 2>/dev/null || echo 0)
  lines=$(action_lines)
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["routed"]=int(sys.argv[2]); d["action_lines"]=int(sys.argv[3]); print(json.dumps(d))' \
      "$work/line" "$routed" "$lines" | tee -a "$work/results.jsonl"
}
one_run
one_run --inherit
python3 - "$work/results.jsonl" <<'PY'
import json, sys
for r in (json.loads(l) for l in open(sys.argv[1])):
    print(f"{r['socket']:>20}: {r['sent']} sent, {r['ok']} answered 2xx, {r['refused']} refused, "
          f"{r['failed']} failed otherwise {r['failures']}; p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms; "
          f"restart {r['restart_ms']} ms; {r['routed']} routed ({r['action_lines']} action lines)")
PY
