#!/usr/bin/env bash
# End-to-end benchmark: Tight webhooks at a steady rate (default 1,000/s for
# 10 s) into Switchyard (default durable settings), a rule forwarding each
# to the http action, and a receiver on 127.0.0.1 that answers at once and
# measures how long each event took from its scheduled send to its arrival.
#
# RATES="500 1000 2000 3000 5000" (a list) runs each rate in turn, each with
# a fresh daemon and store, and ends with the highest rate at which every
# webhook was accepted and delivered with p99 at most 20 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-1000} SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
SECRET=bench-secret-0123456789abcdefghijklmnop
SY_PORT=18090 RX_PORT=19200

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-http -p switchyard-bench
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. bench/lib.sh
mkdir -p "$work/plugins" "$work/rules" "$work/data"
cp target/release/libswitchyard_tight.so target/release/libswitchyard_http.so "$work/plugins/"
cat > "$work/rules/forward.rhai" <<'RHAI'
const EVENTS = ["tight.invoiceViewed"];
action("forward", #{ body: #{ invoice: event.data.eventData.entityId, id: event.id } });
RHAI
{ tight_host $SY_PORT data rules; cat <<TOML
[actions.forward]
plugin = "http"
url = "http://127.0.0.1:$RX_PORT/in"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
concurrency = 32
TOML
} > "$work/switchyard.toml"
one_rate() {
  rm -rf "$work/data"; mkdir -p "$work/data"
  BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$work/switchyard.toml" 2>"$work/switchyard.log" &
  pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$SY_PORT") 2>/dev/null && break; sleep 0.1; done
  target/release/switchyard-bench e2e --url "http://127.0.0.1:$SY_PORT/hooks/tight" --secret "$SECRET" \
      --listen "127.0.0.1:$RX_PORT" --rate "$1" --seconds "$SECONDS_PER_RUN" | tee -a "$work/e2e.jsonl"
  echo "switchyard peak RSS: $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") kB"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}
for rate in ${RATES:-$RATE}; do one_rate "$rate"; done
python3 - "$work/e2e.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
good = [r["rate"] for r in runs
        if r["failed"] == 0 and r["delivered"] == r["sent"] and r["p99_ms"] <= 20]
print(f"highest rate with every event delivered and p99 <= 20 ms: {max(good) if good else 'none'} events/s"
      f" (of {', '.join(str(r['rate']) for r in runs)})")
PY
