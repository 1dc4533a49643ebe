#!/usr/bin/env bash
# Ingest benchmark: 1 KiB signed LIFECYCLE webhooks for $SECONDS_PER_RUN s at
# 1 and 32 connections against
#   (a) Switchyard: default (durable) settings, the example rule, file action;
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
SY_PORT=18080 CEIL_PORT=19101 HOOK_PORT=19000

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-file -p switchyard-bench
command -v webhook >/dev/null || { echo "webhook is not installed (apt-get install webhook)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/plugins" "$work/rules" "$work/data"
cp target/release/libswitchyard_tight.so target/release/libswitchyard_file.so "$work/plugins/"
cp rules/invoice-viewed.rhai "$work/rules/"
cat > "$work/switchyard.toml" <<TOML
listen = "127.0.0.1:$SY_PORT"
data_dir = "data"
plugin_dir = "plugins"
rules_dir = "rules"
[sources.tight]
plugin = "tight"
secret = { env = "BENCH_SECRET" }
[actions.notify-owner]
plugin = "file"
path = "$work/data/notify-owner.jsonl"
TOML
cat > "$work/hooks.json" <<JSON
[{"id": "bench", "execute-command": "/bin/true",
  "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "$SECRET",
                             "parameter": {"source": "header", "name": "X-Signature"}}}}]
JSON

BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$work/switchyard.toml" 2>"$work/switchyard.log" &
sy_pid=$!; pids+=("$sy_pid")
target/release/switchyard-bench ceiling --listen 127.0.0.1:$CEIL_PORT --secret "$SECRET" >/dev/null &
pids+=("$!")
webhook -hooks "$work/hooks.json" -ip 127.0.0.1 -port $HOOK_PORT >/dev/null 2>&1 &
pids+=("$!")

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
wait_port $SY_PORT; wait_port $CEIL_PORT; wait_port $HOOK_PORT

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
run() { settle; target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" "$@" | tee -a "$results"; }
for conns in 1 32; do
  run --label switchyard --url "http://127.0.0.1:$SY_PORT/hooks/tight" --signing tight --connections $conns
  run --label ceiling --url "http://127.0.0.1:$CEIL_PORT/hook" --signing hmac --connections $conns
  run --label webhook --url "http://127.0.0.1:$HOOK_PORT/hooks/bench" --signing hmac --connections $conns
done
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$sy_pid/status")
# What the store costs the disk: bytes Switchyard handed to write(2) (WAL
# frames, checkpoints, the action's file) and CPU seconds it used, in all.
wchar=$(awk '/^wchar/ {print $2}' "/proc/$sy_pid/io")
cpu_ticks=$(awk '{print $14 + $15}' "/proc/$sy_pid/stat")
# Let the outbox drain so the actions' count can be checked.
sleep 2
actions=$(wc -l < "$work/data/notify-owner.jsonl")

python3 - "$results" "$rss_kb" "$actions" "$wchar" "$cpu_ticks" "$(getconf CLK_TCK)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rss_mib = int(sys.argv[2]) / 1024
by = {(r["label"], r["connections"]): r for r in rows}
print()
print(f"{'target':<12}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}")
for r in rows:
    print(f"{r['label']:<12}{r['connections']:>6}{r['rps']:>10}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['failed']:>8}")
print()
for c in (1, 32):
    s, b, w = by[("switchyard", c)], by[("ceiling", c)], by[("webhook", c)]
    print(f"{c:>2} conn: switchyard/ceiling = {s['rps']/max(b['rps'],1):.2f}x, switchyard/webhook = {s['rps']/max(w['rps'],1):.2f}x")
print(f"switchyard peak RSS: {rss_mib:.1f} MiB; action lines written: {sys.argv[3]}; "
      f"2xx answered: {sum(r['ok'] for r in rows if r['label']=='switchyard')}")
answered = max(sum(r['ok'] for r in rows if r['label'] == 'switchyard'), 1)
print(f"switchyard per webhook: {int(sys.argv[4]) / answered / 1024:.1f} KiB written, "
      f"{int(sys.argv[5]) / int(sys.argv[6]) / answered * 1e6:.0f} us CPU")
PY
