#!/usr/bin/env bash
# Ingest benchmark: 1 KiB signed LIFECYCLE webhooks for $SECONDS_PER_RUN s at
# 1 and 32 connections against
#   (a) Switchyard, the full path: default (durable) settings, the example
#       rule, the file action;
#   (a') Switchyard, ingest only: the same, but no rule wants the event
#       (verified, stored durably, answered; nothing to route or run);
#   (b) the ceiling: a minimal hyper server that only checks an HMAC-SHA256;
#   (c) adnanh/webhook (Debian package `webhook`) with a payload-hmac-sha256
#       rule running /bin/true.
# All on 127.0.0.1, in the same run. Prints one JSON line per run, then a
# summary with Switchyard's figures as ratios of (b) and (c), and its peak RSS.
#
# Needs: a Rust toolchain, python3, and `webhook` (apt-get install webhook).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
SECRET=bench-secret-0123456789abcdefghijklmnop
SY_PORT=18080 SY_INGEST_PORT=18081 CEIL_PORT=19101 HOOK_PORT=19000

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-file -p switchyard-bench
command -v webhook >/dev/null || { echo "webhook is not installed (apt-get install webhook)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

. bench/lib.sh
setup_full_path
mkdir -p "$work/no-rules" "$work/data" "$work/ingest-data"
# The full path, and ingest only (a folder without rules: events are
# verified, stored and answered; nothing routes them).
config $SY_PORT data rules > "$work/switchyard.toml"
config $SY_INGEST_PORT ingest-data no-rules > "$work/ingest.toml"
cat > "$work/hooks.json" <<JSON
[{"id": "bench", "execute-command": "/bin/true",
  "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "$SECRET",
                             "parameter": {"source": "header", "name": "X-Signature"}}}}]
JSON

BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$work/switchyard.toml" 2>"$work/switchyard.log" &
sy_pid=$!; pids+=("$sy_pid")
BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$work/ingest.toml" 2>"$work/ingest.log" &
ingest_pid=$!; pids+=("$ingest_pid")
target/release/switchyard-bench ceiling --listen 127.0.0.1:$CEIL_PORT --secret "$SECRET" >/dev/null &
pids+=("$!")
webhook -hooks "$work/hooks.json" -ip 127.0.0.1 -port $HOOK_PORT >/dev/null 2>&1 &
pids+=("$!")

wait_port $SY_PORT; wait_port $SY_INGEST_PORT; wait_port $CEIL_PORT; wait_port $HOOK_PORT

results="$work/results.jsonl"
# adnanh/webhook answers before its command has run, and keeps spawning
# /bin/true for seconds after its load ends: wait until processes stop being
# created (the last pid in /proc/loadavg stands still), at most 30 s, so that
# no run pays for the one before it.
settle() {
  local last now
  last=$(awk -F/ '{print $NF}' /proc/loadavg | awk '{print $2}')
  for _ in $(seq 1 30); do
    sleep 1
    now=$(awk -F/ '{print $NF}' /proc/loadavg | awk '{print $2}')
    [ $((now - last)) -lt 20 ] && return 0
    last=$now
  done
}
costs="$work/costs.jsonl"
# What a process has used so far: bytes handed to write(2) (WAL frames,
# checkpoints, the action's file) and CPU ticks.
# Also the store's writer thread's ticks (every write of the embedded store
# goes through it: the part of a webhook that does not spread over cores).
writer_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = switchyard-stor ] && { awk '{print $14 + $15}' "$t/stat"; return; }
  done
  echo 0
}
usage() { echo "$(awk '/^wchar/ {print $2}' "/proc/$1/io") $(awk '{print $14 + $15}' "/proc/$1/stat") $(writer_ticks "$1")"; }
# The full path's work goes on after its load ends: wait (at most 30 s)
# until every action line is written (drained), so that its cost is all counted.
full_ok=0
run() { settle; target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" "$@" | tee -a "$results"; }
# A Switchyard run, with what it cost the daemon (pid $1) beside it.
measured() {
  local pid=$1; shift
  settle
  read -r w0 t0 s0 <<< "$(usage "$pid")"
  local line; line=$(target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" "$@")
  echo "$line" | tee -a "$results"
  if [ "$pid" = "$sy_pid" ]; then
    full_ok=$((full_ok + $(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')))
    drained "$full_ok"
  fi
  read -r w1 t1 s1 <<< "$(usage "$pid")"
  echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"label": r["label"], "connections": r["connections"], "wchar": int(sys.argv[1]), "ticks": int(sys.argv[2]), "writer": int(sys.argv[3])}))' $((w1 - w0)) $((t1 - t0)) $((s1 - s0)) >> "$costs"
}
for conns in 1 32; do
  measured "$sy_pid" --label switchyard --url "http://127.0.0.1:$SY_PORT/hooks/tight" --signing tight --connections $conns
  measured "$ingest_pid" --label ingest-only --url "http://127.0.0.1:$SY_INGEST_PORT/hooks/tight" --signing tight --connections $conns
  run --label ceiling --url "http://127.0.0.1:$CEIL_PORT/hook" --signing hmac --connections $conns
  run --label webhook --url "http://127.0.0.1:$HOOK_PORT/hooks/bench" --signing hmac --connections $conns
done
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$sy_pid/status")
actions=$(action_lines)

python3 - "$results" "$costs" "$rss_kb" "$actions" "$(getconf CLK_TCK)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
costs = {(c["label"], c["connections"]): c for c in map(json.loads, open(sys.argv[2]))}
rss_mib, actions, tck = int(sys.argv[3]) / 1024, int(sys.argv[4]), int(sys.argv[5])
by = {(r["label"], r["connections"]): r for r in rows}
print()
print(f"{'target':<12}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}{'CPU us/req':>12}{'writer us':>10}{'KiB/req':>9}")
for r in rows:
    c = costs.get((r["label"], r["connections"]))
    per = ""
    if c:
        n = max(r["ok"], 1)
        per = f"{c['ticks'] / tck / n * 1e6:>12.0f}{c['writer'] / tck / n * 1e6:>10.0f}{c['wchar'] / n / 1024:>9.1f}"
    print(f"{r['label']:<12}{r['connections']:>6}{r['rps']:>10}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['failed']:>8}{per}")
print()
for c in (1, 32):
    s, i, b, w = (by[(t, c)] for t in ("switchyard", "ingest-only", "ceiling", "webhook"))
    print(f"{c:>2} conn: full path: {s['rps']/max(b['rps'],1):.2f}x ceiling, {s['rps']/max(w['rps'],1):.2f}x webhook; "
          f"ingest only: {i['rps']/max(b['rps'],1):.2f}x ceiling, {i['rps']/max(w['rps'],1):.2f}x webhook")
full = sum(r["ok"] for r in rows if r["label"] == "switchyard")
print(f"full path: peak RSS {rss_mib:.1f} MiB; action lines written: {actions}; 2xx answered: {full}")
PY
