#!/usr/bin/env bash
# Queue outputs: Tight webhooks (1 KiB, signed) at 32 connections for
# $SECONDS_PER_RUN s into a daemon whose rule sends each to the Redis
# Streams action; the rate events reach the stream (accepted webhooks over
# the time from the load's start until the stream holds them all), beside
# the same redis-server's own XADD rate from redis-benchmark (1 and 32
# connections, no pipelining) in the same run. Redis keeps the stream in
# memory here (no append-only file): the bench measures the path to it.
#
# Needs: a Rust toolchain, python3, redis-server and redis-benchmark
# (apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
SECRET=bench-secret-0123456789abcdefghijklmnop
SY_PORT=18082 REDIS_PORT=16379

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-redis -p switchyard-bench
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. bench/lib.sh

mkdir -p "$work/plugins" "$work/rules" "$work/data"
cp target/release/libswitchyard_tight.so target/release/libswitchyard_redis.so "$work/plugins/"
cat > "$work/rules/to-the-bus.rhai" <<'RHAI'
const EVENTS = ["tight.invoiceViewed"];
action("bus", #{});
RHAI
{ tight_host $SY_PORT data rules; cat <<TOML
[actions.bus]
plugin = "redis"
url = "redis://127.0.0.1:$REDIS_PORT/0"
stream = "webhooks"
TOML
} > "$work/switchyard.toml"

redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
pids+=("$!")
BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$work/switchyard.toml" 2>"$work/switchyard.log" &
pids+=("$!")
wait_port $REDIS_PORT; wait_port $SY_PORT
rcli() { redis-cli -p $REDIS_PORT "$@"; }

# The reference: the server's own XADD rate, one request at a time.
ref1=$(redis-benchmark -p $REDIS_PORT -n 100000 -c 1 -q xadd ref '*' f v | awk '{for (i = 1; i <= NF; i++) if ($i ~ /requests/) print $(i-1)}' | tail -1)
ref32=$(redis-benchmark -p $REDIS_PORT -n 300000 -c 32 -q xadd ref '*' f v | awk '{for (i = 1; i <= NF; i++) if ($i ~ /requests/) print $(i-1)}' | tail -1)

start=$(date +%s.%N)
line=$(target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" \
  --label redis --url "http://127.0.0.1:$SY_PORT/hooks/tight" --signing tight --connections 32)
ok=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
for _ in $(seq 1 600); do
  [ "$(rcli XLEN webhooks)" -ge "$ok" ] && break
  sleep 0.1
done
end=$(date +%s.%N)
len=$(rcli XLEN webhooks)

python3 - "$line" "$len" "$start" "$end" "$ref1" "$ref32" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
length, start, end = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ref1, ref32 = float(sys.argv[5]), float(sys.argv[6])
rate = length / (end - start)
print(json.dumps(r))
print(f"accepted {r['ok']} webhooks ({r['rps']} req/s answered), {length} entries in the stream")
print(f"events into the stream: {rate:.0f}/s; redis-benchmark XADD: {ref1:.0f}/s at 1 connection, {ref32:.0f}/s at 32")
print(f"ratio: {rate / ref1:.2f}x one connection's XADD, {rate / ref32:.2f}x 32 connections'")
PY
