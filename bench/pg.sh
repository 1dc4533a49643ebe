#!/usr/bin/env bash
# Shared-store benchmark: 1 KiB signed Tight webhooks for $SECONDS_PER_RUN s
# at 32 connections in all, spread evenly over 1, 2 and 3 Switchyard
# instances on one PostgreSQL database (the full path: the example rule and
# the file action), and the same load on one instance with the embedded
# store, in the same run. For each: webhooks acknowledged per second, p50
# and p99 of the answers, and actions done per second (from the first
# request until the last action line). Ends with ratios to one instance and
# to the embedded store.
#
# PostgreSQL is Debian's (apt-get install postgresql), started here in a
# temporary directory on 127.0.0.1 (as the postgres user when run as root),
# with its default durability (fsync, synchronous_commit on).
#
# Then end to end (E2E_RATES, default "500 1000 1500 2000"; E2E_RATES= skips
# it): webhooks at a steady rate for $SECONDS_PER_RUN s, spread over 1, 2 and
# 3 instances on PostgreSQL (and one on the embedded store), a rule
# forwarding each to the http action, and switchyard-bench's receiver
# timing each from its scheduled send to its arrival; ends with the highest
# rate each keeps with every event delivered and p99 at most 20 ms.
# SKIP_LOAD=1 runs only the end-to-end part.
# After each PostgreSQL load run, what the database spent per webhook
# acknowledged: CPU of all its processes (from /proc), statement execution
# time and calls (pg_stat_statements, preloaded here), WAL bytes, records
# and syncs (pg_stat_wal), and the statements that took the most time;
# for every load run, the instances' own CPU per webhook, and on
# PostgreSQL the bytes its tables and indexes hold per webhook.
# ONLY="2" runs only the PostgreSQL run with that many instances; DEBUG=1
# prints the jobs and events by state and owner after each PostgreSQL run,
# and each run database's requests; KEEP=1 keeps the runs' folders.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONNECTIONS=${CONNECTIONS:-32}
SECRET=bench-secret-0123456789abcdefghijklmnop

cargo build --release -q -p switchyard -p switchyard-tight -p switchyard-file -p switchyard-http -p switchyard-bench
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

work=$(mktemp -d)
pgdir=$(mktemp -d)
mkdir -p "$work/plugins" "$work/rules"
pgrun() { local program=$1; shift; "$pgbin/$program" "$@"; }
if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$pgdir"
    pgrun() { local program=$1; shift; runuser -u postgres -- "$pgbin/$program" "$@"; }
fi
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pgrun pg_ctl -D "$pgdir/data" -m fast stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] && { echo "kept: $work" >&2; rm -rf "$pgdir"; return; }
    rm -rf "$work" "$pgdir"
}
trap cleanup EXIT
pgport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pgrun initdb -A trust -U postgres -E UTF8 -D "$pgdir/data" >/dev/null
pgrun pg_ctl -D "$pgdir/data" -l "$pgdir/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pgport -k $pgdir -c max_connections=300 -c shared_preload_libraries=pg_stat_statements" start >/dev/null
pg="postgres://postgres@127.0.0.1:$pgport"
psql() { command psql -q -X "$@"; }
psql "$pg/postgres" -c "CREATE EXTENSION pg_stat_statements"

# CPU seconds the database's processes have used: the postmaster, its live
# children, and the children it has reaped (their backends gone).
pg_cpu() {
    python3 - "$(head -1 "$pgdir/data/postmaster.pid")" <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
def fields(pid):
    text = open(f"/proc/{pid}/stat").read()
    return text[text.rindex(")") + 2:].split()
root = sys.argv[1]
f = fields(root)
ticks = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
for pid in os.listdir("/proc"):
    if pid.isdigit() and pid != root:
        try:
            g = fields(pid)
        except OSError:
            continue
        if g[1] == root:
            ticks += int(g[11]) + int(g[12])
print(ticks / hz)
PY
}

# What the database spent on the last run, per webhook acknowledged ($1),
# appended to $results under label $2; CPU from $3 (pg_cpu before the run).
pg_costs() {
    local ok=$1 label=$2 cpu0=$3 cpu1
    sleep 0.5
    cpu1=$(pg_cpu)
    psql -At -F ' ' "$pg/postgres" -c "SELECT coalesce(sum(total_exec_time), 0), coalesce(sum(calls), 0) FROM pg_stat_statements" \
        -c "SELECT wal_bytes, wal_records, wal_sync FROM pg_stat_wal" \
        -c "SELECT round(total_exec_time::numeric / $ok * 1000, 1), round(calls::numeric / $ok, 2), regexp_replace(left(query, 70), '\s+', ' ', 'g')
            FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 6" > "$work/pgstat"
    python3 - "$ok" "$label" "$cpu0" "$cpu1" "$work/pgstat" <<'PY' | tee -a "$work/pgcost.jsonl"
import json, sys
ok, label, cpu0, cpu1 = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
lines = open(sys.argv[5]).read().splitlines()
exec_ms, calls = map(float, lines[0].split())
wal_bytes, wal_records, wal_sync = map(float, lines[1].split())
print(json.dumps({
    "label": label, "ok": ok,
    "cpu_us": round((cpu1 - cpu0) / ok * 1e6), "exec_us": round(exec_ms / ok * 1000),
    "statements": round(calls / ok, 2), "wal_bytes": round(wal_bytes / ok),
    "wal_records": round(wal_records / ok, 1), "commits_synced": round(wal_sync / ok, 3),
    "top": [line.split(" ", 2) for line in lines[2:]],
}))
PY
}

cp target/release/libswitchyard_tight.so target/release/libswitchyard_file.so \
    target/release/libswitchyard_http.so "$work/plugins/"
cp rules/invoice-viewed.rhai "$work/rules/"
results="$work/results.jsonl"

# run LABEL INSTANCES [STORE_URL]: a fresh store, the instances, the load
# split over them, then waits (at most 120 s) for every action line.
run() {
    local label=$1 n=$2 url=${3:-} run_dir="$work/$1"
    mkdir -p "$run_dir"
    local ports=() i
    for i in $(seq 1 "$n"); do
        local port=$((18200 + i)) data="$run_dir/data$i"
        mkdir -p "$data"
        {
            echo "listen = \"127.0.0.1:$port\""
            echo "data_dir = \"$data\""
            echo "plugin_dir = \"$work/plugins\""
            echo "rules_dir = \"$work/rules\""
            [ -n "$url" ] && printf '[store]\nurl = "%s"\n' "$url"
            printf '[sources.tight]\nplugin = "tight"\nsecret = { env = "BENCH_SECRET" }\n'
            printf '[actions.notify-owner]\nplugin = "file"\npath = "%s"\n' "$run_dir/out.jsonl"
        } > "$run_dir/s$i.toml"
        BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$run_dir/s$i.toml" 2>"$run_dir/log$i" &
        pids+=("$!")
        ports+=("$port")
    done
    for port in "${ports[@]}"; do
        for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    done
    [ -n "${DEBUG:-}" ] && { echo "$label: started ${pids[*]}" >&2; ss -ltnp 2>/dev/null | grep ':182' >&2 || true; }
    local start loads=()
    start=$(date +%s.%N)
    for port in "${ports[@]}"; do
        target/release/switchyard-bench load --seconds "$SECONDS_PER_RUN" --secret "$SECRET" \
            --label "$label" --url "http://127.0.0.1:$port/hooks/tight" --signing tight \
            --connections $((CONNECTIONS / n)) > "$run_dir/load$port.json" &
        loads+=("$!")
    done
    for p in "${loads[@]}"; do wait "$p"; done
    local ok
    ok=$(cat "$run_dir"/load*.json | python3 -c 'import json,sys; print(sum(json.loads(l)["ok"] for l in sys.stdin))')
    for _ in $(seq 1 1200); do
        [ "$(wc -l < "$run_dir/out.jsonl" 2>/dev/null || echo 0)" -ge "$ok" ] && break
        sleep 0.1
    done
    local end cpu db_bytes=0
    end=$(date +%s.%N)
    # The instances' CPU (user and system, all threads), and on PostgreSQL
    # what the tables and their indexes hold.
    cpu=$(python3 -c '
import os, sys
print(sum(sum(int(x) for x in open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[11:13])
          for p in sys.argv[1:]) / os.sysconf("SC_CLK_TCK"))' "${pids[@]}")
    [ -n "$url" ] && db_bytes=$(psql -At "$url" -c "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'")
    if [ -n "${DEBUG:-}" ] && [ -n "$url" ]; then
        psql "$url" -c "select state, owner, count(*) from jobs group by 1, 2" -c "select state, owner, count(*) from events group by 1, 2" -c "select verdict, count(*) from requests group by 1" -c "select * from instances" >&2
        for db in $(psql -At "$pg/postgres" -c "select datname from pg_database where datname like 'sy%'"); do
            echo "$db: $(psql -At "$pg/$db" -c "select count(*) from requests") requests" >&2
        done
        grep -iE "error|warn" "$run_dir"/log* | grep -v "plugin refused\|literal secret" | head -5 >&2 || true
    fi
    python3 - "$label" "$n" "$ok" "$start" "$end" "$run_dir" "$cpu" "$db_bytes" <<'PY' >> "$results"
import json, sys, glob
label, n, ok, start, end, run_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
cpu, db_bytes = float(sys.argv[7]), int(sys.argv[8] or 0)
loads = [json.loads(open(f).read()) for f in sorted(glob.glob(f"{run_dir}/load*.json"))]
lines = sum(1 for _ in open(f"{run_dir}/out.jsonl"))
print(json.dumps({
    "label": label, "instances": n, "ok": ok, "failed": sum(l["failed"] for l in loads),
    "rps": round(sum(l["rps"] for l in loads)),
    "p50_ms": max(l["p50_ms"] for l in loads), "p99_ms": max(l["p99_ms"] for l in loads),
    "actions": lines, "done_per_s": round(lines / (end - start)),
    "daemon_cpu_us": round(cpu / max(ok, 1) * 1e6), "db_bytes": round(db_bytes / max(ok, 1)),
}))
PY
    tail -1 "$results"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

if [ -z "${SKIP_LOAD:-}" ]; then
[ -z "${ONLY:-}" ] && run embedded 1
for n in ${ONLY:-1 2 3}; do
    psql "$pg/postgres" -c "CREATE DATABASE sy$n"
    psql "$pg/postgres" -c "SELECT pg_stat_statements_reset(), pg_stat_reset_shared('wal')" >/dev/null
    cpu0=$(pg_cpu)
    run "postgres-$n" "$n" "$pg/sy$n"
    pg_costs "$(tail -1 "$results" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["ok"])')" "postgres-$n" "$cpu0"
done

python3 - "$results" <<'PY'
import json, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
print()
print(f"{'store':<12} {'inst':>4} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'done/s':>7} {'failed':>6} {'inst CPU us':>11} {'table B':>8}")
for r in rows.values():
    print(f"{r['label']:<12} {r['instances']:>4} {r['rps']:>7} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['done_per_s']:>7} {r['failed']:>6} {r['daemon_cpu_us']:>11} {r['db_bytes']:>8}")
one, emb = rows.get("postgres-1"), rows.get("embedded")
print()
for n in (1, 2, 3):
    r = rows.get(f"postgres-{n}")
    if not (r and one and emb):
        continue
    print(f"postgres x{n}: req/s {r['rps'] / one['rps']:.2f}x one instance, {r['rps'] / emb['rps']:.2f}x embedded; "
          f"done/s {r['done_per_s'] / max(one['done_per_s'], 1):.2f}x one instance, {r['done_per_s'] / max(emb['done_per_s'], 1):.2f}x embedded")
PY
python3 - "$work/pgcost.jsonl" <<'PY'
import json, sys
print()
print("PostgreSQL per webhook acknowledged:")
print(f"{'run':<12} {'CPU us':>7} {'exec us':>8} {'stmts':>6} {'WAL B':>7} {'WAL recs':>8} {'syncs':>6}")
costs = [json.loads(l) for l in open(sys.argv[1])]
for c in costs:
    print(f"{c['label']:<12} {c['cpu_us']:>7} {c['exec_us']:>8} {c['statements']:>6} {c['wal_bytes']:>7} {c['wal_records']:>8} {c['commits_synced']:>6}")
for c in costs:
    print(f"\n{c['label']}: statements by time (us and calls per webhook)")
    for us, calls, query in c["top"]:
        print(f"  {us:>7} {calls:>6}  {query}")
PY
fi

# e2e_run LABEL INSTANCES RATE [STORE_URL]: a fresh store, the instances
# forwarding to the receiver, the steady load spread over them.
e2e_run() {
    local label=$1 n=$2 rate=$3 url=${4:-} run_dir="$work/e2e-$1-$3"
    mkdir -p "$run_dir/rules"
    cat > "$run_dir/rules/forward.rhai" <<'RHAI'
const EVENTS = ["tight.invoiceViewed"];
action("forward", #{ body: #{ invoice: event.data.eventData.entityId, id: event.id } });
RHAI
    local urls=() i
    for i in $(seq 1 "$n"); do
        local port=$((18300 + i)) data="$run_dir/data$i"
        mkdir -p "$data"
        {
            echo "listen = \"127.0.0.1:$port\""
            echo "data_dir = \"$data\""
            echo "plugin_dir = \"$work/plugins\""
            echo "rules_dir = \"$run_dir/rules\""
            [ -n "$url" ] && printf '[store]\nurl = "%s"\n' "$url"
            printf '[sources.tight]\nplugin = "tight"\nsecret = { env = "BENCH_SECRET" }\n'
            printf '[actions.forward]\nplugin = "http"\nurl = "http://127.0.0.1:19300/in"\nconcurrency = 32\n'
        } > "$run_dir/s$i.toml"
        BENCH_SECRET=$SECRET SWITCHYARD_LOG=warn target/release/switchyard run --config "$run_dir/s$i.toml" 2>"$run_dir/log$i" &
        pids+=("$!")
        urls+=("http://127.0.0.1:$port/hooks/tight")
    done
    for i in $(seq 1 "$n"); do
        for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$((18300 + i))") 2>/dev/null && break; sleep 0.1; done
    done
    target/release/switchyard-bench e2e --url "$(IFS=,; echo "${urls[*]}")" --secret "$SECRET" \
        --listen 127.0.0.1:19300 --rate "$rate" --seconds "$SECONDS_PER_RUN" \
        | python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); r["label"] = sys.argv[1]; print(json.dumps(r))' "$label" \
        | tee -a "$work/e2e.jsonl"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

E2E_RATES=${E2E_RATES-500 1000 1500 2000}
[ -z "$E2E_RATES" ] && exit 0
echo
for rate in $E2E_RATES; do
    e2e_run embedded 1 "$rate"
    for n in 1 2 3; do
        psql "$pg/postgres" -c "CREATE DATABASE e2e_${n}_$rate"
        e2e_run "postgres-$n" "$n" "$rate" "$pg/e2e_${n}_$rate"
    done
done
python3 - "$work/e2e.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print()
print(f"{'store':<12} {'rate':>6} {'delivered':>9} {'p50 ms':>7} {'p99 ms':>8} {'failed':>6}")
for r in runs:
    print(f"{r['label']:<12} {r['rate']:>6} {r['delivered']:>9} {r['p50_ms']:>7.2f} {r['p99_ms']:>8.2f} {r['failed']:>6}")
print()
for label in dict.fromkeys(r["label"] for r in runs):
    good = [r["rate"] for r in runs if r["label"] == label and r["failed"] == 0
            and r["delivered"] == r["sent"] and r["p99_ms"] <= 20]
    print(f"{label}: highest rate with every event delivered and p99 <= 20 ms: {max(good) if good else 'none'} events/s")
PY
