#!/usr/bin/env bash
# Queue outputs: Tight webhooks (1 KiB, signed) at 32 connections for
# $SECONDS_PER_RUN s into a daemon whose rule sends each to a queue action;
# the rate events reach the broker (accepted webhooks over the time from
# the load's start until the broker holds them all), beside the same
# broker's own publish rate in the same run:
#
#   redis  the Redis Streams action; redis-benchmark's XADD (1 and 32
#          connections, no pipelining). Redis keeps the stream in memory
#          (no append-only file): the path to it is measured.
#   amqp   the amqp action into a durable queue (persistent messages,
#          publisher confirms); `switchyard-bench broker` publishing the
#          same way from one client, 256 confirms awaited together.
#   nats   the nats action into a file-backed JetStream stream; the same
#          reference with JetStream acks.
#
# Usage: bash bench/queues.sh [redis|amqp|nats|all]   (all by default);
# DELIVERY_CONCURRENCY=N sets the daemon's [delivery] concurrency (jobs in
# flight across actions, 64 by default).
# Needs: a Rust toolchain, python3, and the brokers measured (apt-get
# install redis-server rabbitmq-server nats-server).
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-all}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
SECRET=bench-secret-0123456789abcdefghijklmnop
SY_PORT=18082 REDIS_PORT=16379 AMQP_PORT=15672 AMQP_DIST=15673 NATS_PORT=14222
PASSWORD=bench-broker-password

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-redis \
  -p switchyard-amqp -p switchyard-nats -p switchyard-bench

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. bench/lib.sh

# Starts the daemon with the Tight source and the `bus` action ($1: its
# settings), waits for its port; the daemon's pid is the last of $pids.
daemon() {
  rm -rf "$work/data" "$work/rules" "$work/plugins"
  mkdir -p "$work/plugins" "$work/rules" "$work/data"
  cp target/release/libswitchyard_tight.so target/release/libswitchyard_"$2".so "$work/plugins/"
  cat > "$work/rules/to-the-bus.rhai" <<'RHAI'
const EVENTS = ["tight.invoiceViewed"];
action("bus", #{});
RHAI
  { tight_host $SY_PORT data rules; printf '[actions.bus]\n%s\n' "$1"
    [ -n "${DELIVERY_CONCURRENCY:-}" ] && printf '[delivery]\nconcurrency = %s\n' "$DELIVERY_CONCURRENCY"
  } > "$work/switchyard.toml"
  BENCH_SECRET=$SECRET BUS_PASSWORD=$PASSWORD SWITCHYARD_LOG=warn \
    target/release/switchyard run --config "$work/switchyard.toml" 2>"$work/switchyard-$2.log" &
  pids+=("$!")
  wait_port $SY_PORT
}

# The load; then waits (at most 60 s) until `$1` (a command printing the
# broker's depth) reaches the accepted count; prints "ok depth seconds".
load_into() {
  local start end line ok depth
  start=$(date +%s.%N)
  line=$(target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" \
    --label queue --url "http://127.0.0.1:$SY_PORT/hooks/tight" --signing tight --connections 32)
  ok=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
  for _ in $(seq 1 600); do
    depth=$($1)
    [ "$depth" -ge "$ok" ] && break
    sleep 0.1
  done
  end=$(date +%s.%N)
  echo "$ok $($1) $(python3 -c "print($end - $start)")"
}

stop_daemon() {
  local last=$((${#pids[@]} - 1))
  kill "${pids[$last]}" 2>/dev/null || true
  wait "${pids[$last]}" 2>/dev/null || true
  unset "pids[$last]"
}

# Prints "broker events/s reference/s ratio" and a line of detail.
result() {
  python3 - "$@" <<'PY'
import sys
broker, ok, depth, secs, ref, what = sys.argv[1:7]
rate = int(depth) / float(secs)
print(f"{broker}: accepted {ok} webhooks, {depth} in the broker; {rate:.0f} events/s; "
      f"reference {float(ref):.0f}/s ({what}); ratio {rate / float(ref):.2f}x")
PY
}

run_redis() {
  command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; return 1; }
  redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
  pids+=("$!")
  wait_port $REDIS_PORT
  depth_redis() { redis-cli -p $REDIS_PORT XLEN webhooks; }
  # The reference: the server's own XADD rate.
  local ref1 ref32
  ref1=$(redis-benchmark -p $REDIS_PORT -n 100000 -c 1 -q xadd ref '*' f v | awk '{for (i = 1; i <= NF; i++) if ($i ~ /requests/) print $(i-1)}' | tail -1)
  ref32=$(redis-benchmark -p $REDIS_PORT -n 300000 -c 32 -q xadd ref '*' f v | awk '{for (i = 1; i <= NF; i++) if ($i ~ /requests/) print $(i-1)}' | tail -1)
  daemon "plugin = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT/0\"
stream = \"webhooks\"" redis
  read -r ok depth secs < <(load_into depth_redis)
  stop_daemon
  result redis "$ok" "$depth" "$secs" "$ref1" "redis-benchmark XADD, 1 connection"
  result redis "$ok" "$depth" "$secs" "$ref32" "redis-benchmark XADD, 32 connections"
}

run_amqp() {
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || { echo "rabbitmq-server is not installed" >&2; return 1; }
  mkdir -p "$work/rabbit"
  printf 'listeners.tcp.default = 127.0.0.1:%s\ndefault_user = bench\ndefault_pass = %s\nlog.console = false\n' \
    $AMQP_PORT $PASSWORD > "$work/rabbit/rabbitmq.conf"
  echo '[].' > "$work/rabbit/enabled_plugins"
  epmd -daemon -address 127.0.0.1
  setsid env HOME="$work/rabbit" RABBITMQ_NODENAME=bench$AMQP_PORT@localhost \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=$AMQP_DIST ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_MNESIA_BASE="$work/rabbit/mnesia" RABBITMQ_LOG_BASE="$work/rabbit/log" \
    RABBITMQ_CONFIG_FILE="$work/rabbit/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$work/rabbit/enabled_plugins" \
    /usr/lib/rabbitmq/bin/rabbitmq-server >/dev/null 2>&1 &
  pids+=("$!")
  local url="amqp://bench:$PASSWORD@127.0.0.1:$AMQP_PORT/%2f"
  broker() { target/release/switchyard-bench broker --kind amqp --url "$url" "$@"; }
  for _ in $(seq 1 120); do broker --op declare --name webhooks 2>/dev/null && break; sleep 0.5; done
  broker --op declare --name reference
  local ref
  ref=$(broker --op publish --name reference --count 100000 | python3 -c 'import json,sys; print(json.load(sys.stdin)["rate"])')
  depth_amqp() { broker --op depth --name webhooks; }
  daemon "plugin = \"amqp\"
url = \"amqp://127.0.0.1:$AMQP_PORT/%2f\"
username = \"bench\"
password = { env = \"BUS_PASSWORD\" }
exchange = \"\"
routing_key = \"webhooks\"" amqp
  read -r ok depth secs < <(load_into depth_amqp)
  stop_daemon
  result amqp "$ok" "$depth" "$secs" "$ref" "one client, persistent, 256 confirms awaited together"
}

run_nats() {
  command -v nats-server >/dev/null || { echo "nats-server is not installed" >&2; return 1; }
  nats-server -a 127.0.0.1 -p $NATS_PORT --user bench --pass $PASSWORD -js -sd "$work/nats" >/dev/null 2>&1 &
  pids+=("$!")
  wait_port $NATS_PORT
  local url="nats://bench:$PASSWORD@127.0.0.1:$NATS_PORT"
  broker() { target/release/switchyard-bench broker --kind nats --url "$url" "$@"; }
  broker --op declare --name webhooks
  broker --op declare --name reference
  local ref
  ref=$(broker --op publish --name reference --count 100000 | python3 -c 'import json,sys; print(json.load(sys.stdin)["rate"])')
  depth_nats() { broker --op depth --name webhooks; }
  daemon "plugin = \"nats\"
url = \"nats://127.0.0.1:$NATS_PORT\"
username = \"bench\"
password = { env = \"BUS_PASSWORD\" }
subject = \"webhooks.events\"" nats
  read -r ok depth secs < <(load_into depth_nats)
  stop_daemon
  result nats "$ok" "$depth" "$secs" "$ref" "one client, file storage, 256 acks awaited together"
}

case $WHICH in
  redis) run_redis ;;
  amqp) run_amqp ;;
  nats) run_nats ;;
  all) run_redis; run_amqp; run_nats ;;
  *) echo "usage: bash bench/queues.sh [redis|amqp|nats|all]" >&2; exit 2 ;;
esac
