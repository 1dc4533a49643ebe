#!/usr/bin/env bash
# What tracing costs: the full path (durable ingest, the example rule, the
# file action) at 32 connections for $SECONDS_PER_RUN s, with tracing off,
# on with every webhook traced (sample ratio 1.0), and on with 1 in 100,
# spans going over OTLP/HTTP to a sink on 127.0.0.1 (`switchyard-bench
# sink`); the hyper+HMAC ceiling in the same run. Prints one JSON line per
# run, then each as a ratio of the ceiling, with its CPU per webhook and
# the spans it sent and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONNS=${CONNS:-32}
SECRET=bench-secret-0123456789abcdefghijklmnop
CEIL_PORT=19101 SINK_PORT=19318

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-file -p switchyard-bench

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

. bench/lib.sh
setup_full_path
target/release/switchyard-bench ceiling --listen 127.0.0.1:$CEIL_PORT --secret "$SECRET" >/dev/null &
pids+=("$!")
target/release/switchyard-bench sink --listen 127.0.0.1:$SINK_PORT >/dev/null &
pids+=("$!")
wait_port $CEIL_PORT; wait_port $SINK_PORT

results="$work/results.jsonl"
: > "$work/costs"
# One daemon at a time: label, port, sample ratio ("" for tracing off).
one() {
  local label=$1 port=$2 ratio=$3
  mkdir -p "$work/$label" && rm -f "$work/data/notify-owner.jsonl"
  config "$port" "$label" rules > "$work/$label.toml"
  if [ -n "$ratio" ]; then
    printf '[telemetry]\nendpoint = "http://127.0.0.1:%s"\nsample_ratio = %s\n' "$SINK_PORT" "$ratio" >> "$work/$label.toml"
  fi
  BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn ${SY_BIN:-target/release/switchyard} run --config "$work/$label.toml" 2>"$work/$label.log" &
  local pid=$!
  wait_port "$port"
  local t0; t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local line; line=$(target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" \
    --label "$label" --url "http://127.0.0.1:$port/hooks/tight" --signing tight --connections "$CONNS")
  echo "$line" | tee -a "$results"
  drained "$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')"
  sleep 1
  local t1; t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local spans; spans=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^switchyard_trace_spans_(exported|dropped)_total/ {printf "%s=%s ", $1, $2}')
  echo "$label $((t1 - t0)) ${spans:-}" >> "$work/costs"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run_ceiling() {
  target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" \
    --label ceiling --url "http://127.0.0.1:$CEIL_PORT/hook" --signing hmac --connections "$CONNS" | tee -a "$results"
}
run_ceiling
one off 18090 ""
one sampled-1.0 18091 1.0
one sampled-0.01 18092 0.01
run_ceiling

python3 - "$results" "$work/costs" "$(getconf CLK_TCK)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
costs = {}
for line in open(sys.argv[2]):
    label, ticks, *spans = line.split()
    costs[label] = (int(ticks), " ".join(spans))
tck = int(sys.argv[3])
ceiling = max(r["rps"] for r in rows if r["label"] == "ceiling")
print()
for r in rows:
    if r["label"] == "ceiling":
        continue
    ticks, spans = costs[r["label"]]
    print(f"{r['label']:<14} {r['rps']:>7} req/s  {r['rps']/max(ceiling,1):.3f}x ceiling  "
          f"p99 {r['p99_ms']:.2f} ms  CPU {ticks / tck / max(r['ok'],1) * 1e6:.0f} us/webhook  {spans}")
PY
